"""Contrastive training of the alignment heads on (image base embedding, text embedding) pairs.

The checkpoint is chosen by VALIDATION RETRIEVAL (the rank of each validation text's own image among all
validation images), not by the InfoNCE loss: with ~1k descriptions the loss bottoms out within a few epochs while
retrieval keeps improving (see the stack notes in DESIGN.md). Results vary between seeds at this size, so callers
train several seeds (one :func:`train_alignment` call each) and report :func:`seed_summary`.

Text embeddings may come in several *views* per image (the VLM's description and its summary): a [N, V, d]
array. Each epoch every pair draws one of its available views at random, a cheap text augmentation that never
puts the same image twice in one batch (which would create false negatives). Rows of NaN mark a missing view.

Image embeddings may come in several views too ([N, A, d]: the eight dihedral transforms of each cutout, which
a galaxy has no preferred orientation among); each epoch draws one per pair in the same way. Validation images
are one view each ([N, d]).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from aion_assets.platform.devices import resolve_device
from aion_assets.search.heads import AlignmentHeads, HeadsConfig, heads_from_state
from aion_assets.search.losses import clip_loss

ArrayLike = np.ndarray | torch.Tensor
SELECTION_METRICS = ("val_mrr", "val_median_rank", "val_loss")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; ``asdict`` of it is what goes to MLflow as params.

    The one home of the training defaults: the architecture's come from :class:`HeadsConfig`, and the Dagster
    launchpad config (``search/resources.py``) takes its defaults from here.
    """

    hidden_dim: int = HeadsConfig.hidden_dim
    out_dim: int = HeadsConfig.out_dim
    n_blocks: int = HeadsConfig.n_blocks
    dropout: float = HeadsConfig.dropout
    init_temperature: float = HeadsConfig.init_temperature
    max_logit_scale: float = HeadsConfig.max_logit_scale
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1   # of all optimiser steps, linear from ~0 to lr; cosine decay after
    min_lr_ratio: float = 0.0      # the cosine ends at lr * min_lr_ratio
    seed: int = 0
    learn_temperature: bool = True  # False: the temperature stays at init_temperature
    select_by: str = "val_mrr"     # one of SELECTION_METRICS
    patience: int | None = None    # stop after this many epochs without a better checkpoint; None: run all
    device: str = "auto"           # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    torch_threads: int | None = None  # CPU threads for this call (restored afterwards); None: leave as is

    def __post_init__(self) -> None:
        if self.select_by not in SELECTION_METRICS:
            raise ValueError(f"select_by must be one of {SELECTION_METRICS}, got {self.select_by!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs >= 1 and batch_size >= 2 are required")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """Outcome of :func:`train_alignment`.

    ``history`` has one dict per epoch, epoch 0 being the untrained heads: epoch, train_loss (None at 0),
    val_loss (InfoNCE over the whole validation set, averaged over text views), val_mrr, val_median_rank,
    val_recall_at_1, val_recall_at_10 (text -> own image among validation images), temperature, lr, seconds.
    """

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, Any]]
    config: TrainConfig
    heads_config: HeadsConfig
    seconds: float
    device: str
    stopped_early: bool = False
    best_metrics: dict[str, Any] = field(default_factory=dict)

    def heads(self) -> AlignmentHeads:
        """The best checkpoint as a model on the CPU, in eval mode."""
        return heads_from_state(self.best_state, self.heads_config)


def _as_tensor(array: ArrayLike) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(torch.float32)
    matrix = np.ascontiguousarray(array, dtype=np.float32)
    if not matrix.flags.writeable:  # read-only memmaps: torch wants memory it may write
        matrix = matrix.copy()
    return torch.from_numpy(matrix)


def _as_views(text: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor:
    """[N, d] or [N, V, d] or a list of V [N, d] arrays -> [N, V, d] float32."""
    if isinstance(text, (list, tuple)):
        tensor = torch.stack([_as_tensor(view) for view in text], dim=1)
    else:
        tensor = _as_tensor(text)
    if tensor.ndim == 2:
        tensor = tensor[:, None, :]
    if tensor.ndim != 3:
        raise ValueError(f"text embeddings must be [N, d] or [N, V, d], got {tuple(tensor.shape)}")
    return tensor


def _as_image_views(image: ArrayLike) -> torch.Tensor:
    """[N, d] or [N, A, d] -> [N, A, d] float32."""
    tensor = _as_tensor(image)
    tensor = tensor[:, None, :] if tensor.ndim == 2 else tensor
    if tensor.ndim != 3:
        raise ValueError(f"image embeddings must be [N, d] or [N, A, d], got {tuple(tensor.shape)}")
    return tensor


def _check_pairs(image: torch.Tensor, views: torch.Tensor, name: str) -> torch.Tensor:
    """Validate shapes and return the [N, V] mask of available (finite) text views."""
    if image.ndim not in (2, 3) or image.shape[0] != views.shape[0]:
        raise ValueError(f"{name}: images {tuple(image.shape)} and texts {tuple(views.shape)} are not row-aligned")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name}: image embeddings contain NaN or inf")
    available = torch.isfinite(views).all(dim=2)
    if not available.any(dim=1).all():
        raise ValueError(f"{name}: {int((~available.any(dim=1)).sum())} images have no finite text view")
    return available


# The positives each described image is trained with (one drawn per pair each epoch): "chunks" (each sentence
# of the description, and the summary), "all" (the whole description, each sentence and the summary), "views"
# (the description and the summary), "mean" (their mean embedding), "description" (the description alone).
TEXT_POSITIVES = ("chunks", "all", "views", "mean", "description")


def text_positives(texts: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """[M, V, dt] positives from text embeddings "description", "summary" ([M, dt]) and, for "chunks",
    "sentences" ([M, S, dt], NaN rows pad); NaN marks a missing view."""
    if kind not in TEXT_POSITIVES:
        raise ValueError(f"text positives must be one of {TEXT_POSITIVES}, got {kind!r}")
    description, summary = texts["description"], texts["summary"]
    if kind == "views":
        return np.stack([description, summary], axis=1)
    if kind == "mean":
        return ((description + summary) / 2)[:, None, :]
    if kind == "description":
        return description[:, None, :]
    if "sentences" not in texts:
        raise ValueError(f"{kind} needs the sentence embeddings (texts['sentences'])")
    whole = [description[:, None, :]] if kind == "all" else []
    return np.concatenate([*whole, texts["sentences"], summary[:, None, :]], axis=1)


def _pick_views(available: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One uniformly random available view index per row."""
    counts = available.sum(dim=1)
    choice = (torch.rand(len(counts), generator=generator) * counts).long().clamp(max=counts - 1)
    cumulative = available.long().cumsum(dim=1)
    return (cumulative > choice[:, None]).long().argmax(dim=1)


def retrieval_ranks(query_emb: torch.Tensor, target_emb: torch.Tensor, own: torch.Tensor | None = None,
                    chunk: int = 4096) -> torch.Tensor:
    """Rank (1 = best) of each query's own target among ALL targets, by inner product.

    ``own[j]`` is the target row of query j (default: row-aligned, own = j). Ties count in the query's favour.
    """
    own = torch.arange(query_emb.shape[0], device=query_emb.device) if own is None else own
    if len(own) != query_emb.shape[0]:
        raise ValueError("one own-target index per query is needed")
    ranks = []
    for start in range(0, query_emb.shape[0], chunk):
        sims = query_emb[start:start + chunk] @ target_emb.T
        own_sims = sims.gather(1, own[start:start + chunk, None])
        ranks.append(1 + (sims > own_sims).sum(dim=1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def rank_summary(ranks: torch.Tensor | np.ndarray) -> dict[str, float]:
    ranks_np = np.asarray(ranks, dtype=np.float64)
    return {"mrr": float(np.mean(1.0 / ranks_np)), "median_rank": float(np.median(ranks_np)),
            "recall_at_1": float(np.mean(ranks_np <= 1)), "recall_at_10": float(np.mean(ranks_np <= 10))}


@torch.no_grad()
def evaluate_alignment(model: AlignmentHeads, image: torch.Tensor, views: torch.Tensor,
                       available: torch.Tensor | None = None) -> dict[str, float]:
    """Validation figures of ``model``: InfoNCE loss over the whole set (mean over views) and text -> image ranks.

    Every available text view is a query; its own image is ranked among all validation images.
    """
    was_training = model.training
    model.eval()
    available = torch.isfinite(views).all(dim=2) if available is None else available
    image_emb = model.encode_image(image)
    losses, ranks = [], []
    for view in range(views.shape[1]):
        rows = available[:, view].nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        text_emb = model.encode_text(views[rows, view])
        losses.append(float(clip_loss(image_emb[rows], text_emb, model.scale())) * len(rows))
        # against ALL validation images: a missing view must not shrink the candidate pool
        ranks.append(retrieval_ranks(text_emb, image_emb, own=rows))
    model.train(was_training)
    all_ranks = torch.cat(ranks).cpu()
    summary = rank_summary(all_ranks)
    return {"val_loss": sum(losses) / int(available.sum()), **{f"val_{k}": v for k, v in summary.items()}}


def _is_better(candidate: dict[str, Any], best: dict[str, Any] | None, select_by: str) -> bool:
    if best is None:
        return True
    if select_by == "val_mrr":
        key = lambda r: (r["val_mrr"], -r["val_loss"])  # noqa: E731
    elif select_by == "val_median_rank":
        key = lambda r: (-r["val_median_rank"], r["val_mrr"], -r["val_loss"])  # noqa: E731
    else:
        key = lambda r: (-r["val_loss"],)  # noqa: E731
    return key(candidate) > key(best)


def _lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: AlignmentHeads, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: decaying biases, LayerNorm gains or the temperature only hurts."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and name != "logit_scale" else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_alignment(image_train: ArrayLike, text_train: ArrayLike | Sequence[ArrayLike], image_val: ArrayLike,
                    text_val: ArrayLike | Sequence[ArrayLike], config: TrainConfig | None = None,
                    on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train alignment heads on row-aligned pairs and keep the best validation checkpoint.

    Args:
        image_train: [N, Di] frozen image base embeddings (numpy or torch, any float dtype), or [N, A, Di] with
            A views of each image (e.g. its dihedral transforms), one drawn per pair each epoch.
        text_train: [N, Dt] text embeddings, or [N, V, Dt] / a list of V [N, Dt] arrays with several texts
            (e.g. description and summary) per image; rows of NaN mark a missing view.
        image_val, text_val: the validation pairs, same forms; every finite view is a validation query.
        config: hyper-parameters; ``config.seed`` seeds initialisation, dropout, shuffling and view picks.
        on_epoch: called with each epoch's history record (epoch 0 = before training), e.g. to log to MLflow.

    Returns:
        TrainResult with the best state dict (CPU tensors), its epoch and the full history.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return _train(image_train, text_train, image_val, text_val, config, on_epoch, started)
    finally:
        torch.set_num_threads(previous_threads)


def _train(image_train: ArrayLike, text_train: ArrayLike | Sequence[ArrayLike], image_val: ArrayLike,
           text_val: ArrayLike | Sequence[ArrayLike], config: TrainConfig,
           on_epoch: Callable[[dict[str, Any]], None] | None, started: float) -> TrainResult:
    device = resolve_device(config.device)
    img_tr, txt_tr = _as_image_views(image_train), _as_views(text_train)
    img_va, txt_va = _as_tensor(image_val), _as_views(text_val)
    avail_tr = _check_pairs(img_tr, txt_tr, "train")
    avail_va = _check_pairs(img_va, txt_va, "validation")
    if img_va.ndim != 2:
        raise ValueError(f"validation images must be [N, d], got {tuple(img_va.shape)}")
    if img_tr.shape[2] != img_va.shape[1] or txt_tr.shape[2] != txt_va.shape[2]:
        raise ValueError("train and validation embeddings differ in width")
    if len(img_tr) < 2 or len(img_va) < 2:
        raise ValueError("at least two training and two validation pairs are needed")

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    heads_config = HeadsConfig(image_dim=img_tr.shape[2], text_dim=txt_tr.shape[2], hidden_dim=config.hidden_dim,
                               out_dim=config.out_dim, n_blocks=config.n_blocks, dropout=config.dropout,
                               init_temperature=config.init_temperature, max_logit_scale=config.max_logit_scale)
    model = AlignmentHeads.from_config(heads_config).to(device)
    model.logit_scale.requires_grad_(config.learn_temperature)
    img_tr, txt_tr, img_va, txt_va = (t.to(device) for t in (img_tr, txt_tr, img_va, txt_va))
    avail_va = avail_va.to(device)

    n_train = len(img_tr)
    n_batches = max(1, math.ceil(n_train / config.batch_size))
    total_steps = config.epochs * n_batches
    warmup_steps = max(1, round(config.warmup_fraction * total_steps))
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, warmup_steps, config.min_lr_ratio))

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] = {}
    epochs_since_best = 0
    stopped_early = False

    def record(epoch: int, train_loss: float | None, epoch_started: float) -> None:
        nonlocal best, best_state, epochs_since_best
        row = {"epoch": epoch, "train_loss": train_loss, **evaluate_alignment(model, img_va, txt_va, avail_va),
               "temperature": model.temperature, "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - epoch_started}
        history.append(row)
        if _is_better(row, best, config.select_by):
            best, epochs_since_best = row, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            epochs_since_best += 1
        if on_epoch is not None:
            on_epoch(dict(row))

    record(0, None, time.perf_counter())
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        views = _pick_views(avail_tr, generator).to(device)
        # drawn only when there are views to choose from, so single-view runs keep their random stream
        image_views = (torch.randint(img_tr.shape[1], (n_train,), generator=generator) if img_tr.shape[1] > 1
                       else torch.zeros(n_train, dtype=torch.long)).to(device)
        order = torch.randperm(n_train, generator=generator).to(device)
        # near-equal batches instead of a tiny remainder batch whose loss says nothing
        total_loss, total_pairs = 0.0, 0
        for rows in torch.tensor_split(order, n_batches):
            if len(rows) < 2:
                continue
            image_emb, text_emb = model(img_tr[rows, image_views[rows]], txt_tr[rows, views[rows]])
            loss = clip_loss(image_emb, text_emb, model.scale())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            model.clamp_()
            total_loss += float(loss.detach()) * len(rows)
            total_pairs += len(rows)
        record(epoch, total_loss / max(1, total_pairs), epoch_started)
        if config.patience is not None and epochs_since_best >= config.patience:
            stopped_early = epoch < config.epochs
            break

    assert best is not None
    return TrainResult(best_state=best_state, best_epoch=int(best["epoch"]), history=history, config=config,
                       heads_config=heads_config, seconds=time.perf_counter() - started, device=str(device),
                       stopped_early=stopped_early, best_metrics=dict(best))


def seed_summary(results: Sequence[TrainResult],
                 keys: Sequence[str] = ("val_mrr", "val_median_rank", "val_loss")) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max over seeds of each key of the runs' best checkpoints."""
    summary = {}
    for key in keys:
        values = np.array([r.best_metrics[key] for r in results], dtype=np.float64)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "min": float(values.min()), "max": float(values.max()), "n": len(values)}
    return summary


@torch.no_grad()
def _embed(encode: Callable[[torch.Tensor], torch.Tensor], model: AlignmentHeads, base: ArrayLike, batch: int,
           device: str | torch.device | None) -> np.ndarray:
    target = resolve_device("auto") if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    original_device = next(model.parameters()).device
    model.to(target)
    try:
        n = base.shape[0]
        out = np.empty((n, model.config.out_dim), dtype=np.float32)
        for start in range(0, n, batch):
            # slicing first keeps memory-mapped inputs lazy: only this batch is read from disk
            chunk = _as_tensor(base[start:start + batch]).to(target)
            out[start:start + len(chunk)] = encode(chunk).float().cpu().numpy()
        return out
    finally:
        model.to(original_device)
        model.train(was_training)


def embed_images(heads: AlignmentHeads, base_embeddings: ArrayLike, batch: int = 4096,
                 device: str | torch.device | None = None) -> np.ndarray:
    """Image head over [N, Di] base embeddings, in eval mode: float32 [N, out_dim], unit norm.

    ``device`` None means CUDA when available; the model is returned to its original device and mode.
    """
    return _embed(heads.encode_image, heads, base_embeddings, batch, device)


def embed_texts(heads: AlignmentHeads, text_embeddings: ArrayLike, batch: int = 4096,
                device: str | torch.device | None = None) -> np.ndarray:
    """Text head over [N, Dt] text-encoder embeddings (e.g. an encoded query), float32 [N, out_dim], unit norm."""
    return _embed(heads.encode_text, heads, text_embeddings, batch, device)


def clone_config(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``config`` with some fields changed (e.g. ``seed``) for multi-seed runs."""
    values = copy.deepcopy(config.to_dict())
    values.update(changes)
    return TrainConfig(**values)
