"""Settings of the search chain that users tune from the launchpad; defaults come from the pure configs."""

from __future__ import annotations

import dataclasses

import dagster as dg

from aion_assets.search.training import TrainConfig

_TRAIN = TrainConfig()


class AlignmentTrainingConfig(dg.Config):
    """Contrastive training of the projection heads. Several seeds: at a few thousand descriptions results vary a
    lot between seeds, so the run reports their mean and spread and ensembles them (or keeps the best by
    validation retrieval).

    The per-seed fields are :class:`~aion_assets.search.training.TrainConfig`'s, with its defaults."""

    seeds: list[int] = [0, 1, 2]
    # Measured better than the alternatives across surveys (search_ablations; docs/search_ablations.md).
    # "chunks": each sentence of a description and its summary are an image's positives ("views": the whole
    # description and the summary; "all": both; "mean"; "description").
    text_positives: str = "chunks"
    # True registers every seed's heads as one ensemble (their cosines averaged): measured better on 13 of 15
    # cells, but its vectors are seeds x wider, which tripled the search's p50 at the sample index (a 768-d
    # flat index no longer fits in cache) and would triple a survey's index; so the best seed is kept.
    ensemble: bool = False
    val_fraction: float = 0.15
    split_seed: int = 1234
    epochs: int = _TRAIN.epochs
    batch_size: int = _TRAIN.batch_size
    lr: float = _TRAIN.lr
    weight_decay: float = _TRAIN.weight_decay
    warmup_fraction: float = _TRAIN.warmup_fraction
    hidden_dim: int = _TRAIN.hidden_dim
    out_dim: int = _TRAIN.out_dim
    n_blocks: int = _TRAIN.n_blocks
    dropout: float = _TRAIN.dropout
    select_by: str = _TRAIN.select_by

    def train_config(self, seed: int) -> TrainConfig:
        """The pure config of one seed's run: every field this config shares with TrainConfig, by name."""
        shared = {f.name for f in dataclasses.fields(TrainConfig)} & set(type(self).model_fields)
        return TrainConfig(**{name: getattr(self, name) for name in shared}, seed=seed)


class IndexConfig(dg.Config):
    """FAISS index choice: exact below the threshold, approximate (HNSW / IVF-PQ with exact refine) above."""

    kind: str = "auto"
    exact_threshold: int = 200_000
    recall_sample: int = 200


class EvaluationConfig(dg.Config):
    """With ANTHROPIC_API_KEY set, the VLM re-ranks the top candidates of each target's text search in its
    release pool (the `reranked` method); 0 turns that off. Each candidate is one paid request per sample."""

    rerank_candidates: int = 100
    rerank_samples: int = 1
    gallery_size: int = 10
