"""Settings of the search chain that users tune from the launchpad or the environment."""

from __future__ import annotations

import dagster as dg


class AlignmentTrainingConfig(dg.Config):
    """Contrastive training of the projection heads. Several seeds: at ~1k descriptions results vary a lot
    between seeds, so the run reports their mean and spread and keeps the best by validation retrieval."""

    seeds: list[int] = [0, 1, 2]
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    hidden_dim: int = 512
    output_dim: int = 256
    n_blocks: int = 2
    dropout: float = 0.1
    val_fraction: float = 0.15
    split_seed: int = 1234


class IndexConfig(dg.Config):
    """FAISS index choice: exact below the threshold, approximate (HNSW / IVF-PQ with exact refine) above."""

    kind: str = "auto"
    exact_threshold: int = 200_000
    recall_sample: int = 200


class EvaluationConfig(dg.Config):
    """With ANTHROPIC_API_KEY set, the VLM re-ranks the top candidates of each target's text search (the
    `reranked` method); 0 turns that off. Each candidate is one paid request per sample."""

    rerank_candidates: int = 100
    rerank_samples: int = 1
