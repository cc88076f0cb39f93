"""A Transformer over (name, value) tokens with a diffusion head: posterior samples of any label from any inputs.

Following Leung, Bovy & Speagle (2024, arXiv:2407.15703), a star is a SET of measurements, each a token made from
its name and its standardised value: e = GELU(w_name * value + b_name), with no positional encoding, so the order of
the measurements cannot matter and any subset can be given. The requested label enters as an extra query token
(a learned embedding per name, prepended); the encoder's output at that position conditions a small DDPM head
(:mod:`aion_assets.stellar.ddpm`) that samples the label's posterior. Training picks, for each star and step, a
target among its known labels and a random subset of its OTHER known labels as inputs, so one model answers
"Teff given colours", "logg given Teff and [M/H]" or, with no inputs at all, the prior of a label, without
retraining. The reference implementation is henrysky/stars_foundation_diffusion (MIT, ``stellarperceptron/``);
the code here is our own.

Values are standardised by the caller (the Dagster asset), and so are the samples returned here. Nothing here
imports dagster, mlflow or polars.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aion_assets.stellar.ddpm import DiffusionHead

FORMAT_NAME = "aion-stellar-emulator"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything needed to rebuild a :class:`StellarEmulator` before loading its weights.

    ``names`` is the vocabulary; the token id of ``names[i]`` is ``i + 1`` and 0 is padding. The presets
    :data:`CPU_DEFAULT` and :data:`REFERENCE` come without names: use ``preset.with_names(names)``.
    """

    names: tuple[str, ...] = ()
    embedding_dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 128
    dropout: float = 0.0
    head_layers: int = 3
    head_width: int = 128
    diffusion_steps: int = 120
    beta_start: float = 1e-5
    beta_end: float = 0.1
    schedule: str = "sigmoid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        if len(set(self.names)) != len(self.names):
            raise ValueError("EmulatorConfig.names must be unique")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} is not divisible by num_heads {self.num_heads}")

    def with_names(self, names: Sequence[str]) -> EmulatorConfig:
        return dataclasses.replace(self, names=tuple(names))

    def token(self, name: str) -> int:
        """The token id of ``name`` (index + 1)."""
        return self.names.index(name) + 1

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["names"] = list(self.names)  # plain list: JSON- and weights_only-friendly
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EmulatorConfig:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in values.items() if key in known})


# Small enough to train on tens of thousands of stars on two CPU cores: at batch 512 with ~20 tokens per star,
# ~4.8 training steps/s on one thread and ~7 on two (6000 steps in ~14 min), ~2k posterior samples/s per thread,
# measured on a shared 2-core machine. No dropout: on CPU the Bernoulli masks alone cost ~20% of a step, and the
# random target/subset draws already regularise.
CPU_DEFAULT = EmulatorConfig(embedding_dim=64, num_layers=2, num_heads=4, ff_dim=128, dropout=0.0,
                             head_layers=3, head_width=128)
# The paper's sizes (the reference's trained_model/config.json): for a GPU.
REFERENCE = EmulatorConfig(embedding_dim=192, num_layers=2, num_heads=24, ff_dim=2048, dropout=0.2,
                           head_layers=5, head_width=512)


class StellarEmulator(nn.Module):
    """Non-linear per-name value embedding, Transformer encoder with a prepended query token, DDPM head."""

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__()
        if not config.names:
            raise ValueError("EmulatorConfig.names is empty: use config.with_names(names)")
        self.config = config
        vocab, width = len(config.names) + 1, config.embedding_dim
        # one weight and one bias vector per name, unit scale like the query embedding so that value and query
        # tokens start on one footing; row 0 (padding) stays zero and is masked anyway
        self.value_weight = nn.Parameter(torch.randn(vocab, width))
        self.value_bias = nn.Parameter(torch.randn(vocab, width))
        with torch.no_grad():
            self.value_weight[0].zero_()
            self.value_bias[0].zero_()
        self.query_embedding = nn.Embedding(vocab, width, padding_idx=0)
        layer = nn.TransformerEncoderLayer(width, config.num_heads, config.ff_dim, config.dropout,
                                           activation="gelu", batch_first=True)
        # nested tensors would drop padded positions only in eval mode; keep one code path for train and eval
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.head = DiffusionHead(dim=1, cond_dim=width, num_steps=config.diffusion_steps,
                                  width=config.head_width, n_layers=config.head_layers,
                                  beta_start=config.beta_start, beta_end=config.beta_end,
                                  schedule=config.schedule)

    @property
    def device(self) -> torch.device:
        return self.value_weight.device

    def encode(self, values: torch.Tensor, tokens: torch.Tensor, query: torch.Tensor,
               bucket_rows: int = 128) -> torch.Tensor:
        """The encoder output at the query position, [B, D]: the condition of the head.

        ``values`` [B, L] and ``tokens`` [B, L] (0 = padding) are the inputs; a non-finite value also counts as
        missing. Missing positions are excluded as attention keys, so neither their value nor their name can reach
        the query position; L may be 0 (no inputs: the model answers with the prior of the queried name).

        Why buckets: random-subset training gives stars from 0 to ~all inputs in one batch, so padding to the
        longest would waste about half the encoder's work. Stars are sorted by their number of inputs and encoded
        in groups of ``bucket_rows``, each cropped to its own longest star; since padding is masked, the result is
        the same as one padded pass.
        """
        if values.shape != tokens.shape or values.ndim != 2 or query.shape != (values.shape[0],):
            raise ValueError(f"bad shapes: values {tuple(values.shape)}, tokens {tuple(tokens.shape)}, "
                             f"query {tuple(query.shape)}")
        vocab = len(self.config.names)
        if query.numel() and (int(query.min()) < 1 or int(query.max()) > vocab):
            raise ValueError(f"query tokens must lie in 1..{vocab}")
        missing = (tokens <= 0) | ~torch.isfinite(values)
        tokens = tokens.masked_fill(missing, 0)
        values = values.masked_fill(missing, 0.0)  # a NaN times a zero attention weight would still be NaN
        if values.shape[0] <= bucket_rows:
            return self._encode_padded(values, tokens, missing, query)
        # known inputs first in every row (a stable sort keeps their order), then rows by their number of inputs
        packed = torch.argsort(missing.to(torch.int8), dim=1, stable=True)
        values, tokens, missing = (x.gather(1, packed) for x in (values, tokens, missing))
        counts = (~missing).sum(dim=1)
        rows = torch.argsort(counts, stable=True)
        widths = counts[rows].view(-1)[bucket_rows - 1::bucket_rows].tolist() + [int(counts.max())]
        parts = []
        for chunk, width in zip(rows.split(bucket_rows), widths, strict=False):
            parts.append(self._encode_padded(values[chunk, :width], tokens[chunk, :width], missing[chunk, :width],
                                             query[chunk]))
        return torch.cat(parts)[torch.argsort(rows)]

    def _encode_padded(self, values: torch.Tensor, tokens: torch.Tensor, missing: torch.Tensor,
                       query: torch.Tensor) -> torch.Tensor:
        """One encoder pass over [B, L] inputs whose missing positions are already zeroed and flagged."""
        embedded = F.gelu(self.value_weight[tokens] * values.unsqueeze(-1) + self.value_bias[tokens])
        sequence = torch.cat([self.query_embedding(query).unsqueeze(1), embedded], dim=1)
        mask = torch.cat([torch.zeros_like(missing[:, :1]), missing], dim=1)
        # an all-False mask changes nothing, and the eval fast path rejects a mask over a length-1 sequence
        return self.encoder(sequence, src_key_padding_mask=mask if bool(mask.any()) else None)[:, 0]

    def loss(self, values: torch.Tensor, tokens: torch.Tensor, query: torch.Tensor, target: torch.Tensor,
             generator: torch.Generator | None = None, noise_draws: int = 1) -> torch.Tensor:
        """Noise-prediction loss of the head for the (standardised) ``target`` [B] of each star's query, at
        ``noise_draws`` diffusion draws per star (see :meth:`DiffusionHead.loss`)."""
        return self.head.loss(target.reshape(-1, 1).to(self.value_weight.dtype),
                              self.encode(values, tokens, query), generator=generator, draws=noise_draws)

    @torch.no_grad()
    def sample(self, values: torch.Tensor, tokens: torch.Tensor, query: torch.Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n_samples`` posterior draws of the queried label per star, [B, n_samples], in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self.head.sample(self.encode(values, tokens, query), n_samples, generator=generator)[..., 0]
        finally:
            self.train(was_training)


@dataclass
class TokenTable:
    """Per-star padded measurements: ``values`` [N, L] float32 and ``tokens`` [N, L] int64 (0 = missing).

    Token ``k > 0`` is ``names[k - 1]``; a star's known tokens may sit at any positions and in any order.
    """

    values: np.ndarray
    tokens: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.tokens = np.asarray(self.tokens, dtype=np.int64)
        self.names = tuple(self.names)
        if self.values.shape != self.tokens.shape or self.values.ndim != 2:
            raise ValueError(f"values {self.values.shape} and tokens {self.tokens.shape} must be equal 2-D shapes")
        if self.tokens.size and (self.tokens.min() < 0 or self.tokens.max() > len(self.names)):
            raise ValueError(f"tokens must lie in 0..{len(self.names)}")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def known(self) -> np.ndarray:
        """[N, L] bool: a real measurement (non-zero token with a finite value)."""
        return (self.tokens > 0) & np.isfinite(self.values)

    def subset(self, indices: np.ndarray) -> TokenTable:
        return TokenTable(self.values[indices], self.tokens[indices], self.names)

    @classmethod
    def from_rows(cls, star_index: np.ndarray, name_index: np.ndarray, value: np.ndarray, n_stars: int,
                  names: Sequence[str]) -> TokenTable:
        """Pack long-form rows (star, name, value) into padded arrays; ``name_index`` indexes ``names`` from 0.

        Rows with a non-finite value are dropped (a missing measurement); a repeated (star, name) pair is an error,
        since the model would see the same label twice with possibly different values.
        """
        star_index, name_index = np.asarray(star_index, dtype=np.int64), np.asarray(name_index, dtype=np.int64)
        value = np.asarray(value, dtype=np.float32)
        if not star_index.shape == name_index.shape == value.shape or star_index.ndim != 1:
            raise ValueError("star_index, name_index and value must be 1-D arrays of one length")
        keep = np.isfinite(value)
        star_index, name_index, value = star_index[keep], name_index[keep], value[keep]
        if star_index.size and (star_index.min() < 0 or star_index.max() >= n_stars):
            raise ValueError(f"star_index must lie in 0..{n_stars - 1}")
        if name_index.size and (name_index.min() < 0 or name_index.max() >= len(names)):
            raise ValueError(f"name_index must lie in 0..{len(names) - 1}")
        order = np.lexsort((name_index, star_index))
        star_index, name_index, value = star_index[order], name_index[order], value[order]
        repeated = (np.diff(star_index) == 0) & (np.diff(name_index) == 0)
        if repeated.any():
            at = int(np.flatnonzero(repeated)[0])
            raise ValueError(f"star {star_index[at]} has {names[name_index[at]]!r} more than once")
        counts = np.bincount(star_index, minlength=n_stars)
        starts = np.cumsum(counts) - counts
        position = np.arange(star_index.size) - starts[star_index]
        width = int(counts.max()) if n_stars else 0
        values = np.zeros((n_stars, width), dtype=np.float32)
        tokens = np.zeros((n_stars, width), dtype=np.int64)
        values[star_index, position] = value
        tokens[star_index, position] = name_index + 1
        return cls(values, tokens, tuple(names))


def training_batch(table: TokenTable, batch_indices: np.ndarray,
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, tokens, query, target) for the stars ``batch_indices``: the paper's random-subset training.

    Each star's target is drawn uniformly among its known tokens; its inputs are a random subset, of a size drawn
    uniformly from 0 to all, of its OTHER known tokens, so the target never sees itself and the model learns every
    conditional, including the prior (no inputs). Inputs are packed to the left and the batch is cropped to its
    longest input list. Every star must have at least one known token.
    """
    values, tokens = table.values[batch_indices], table.tokens[batch_indices]
    known = (tokens > 0) & np.isfinite(values)
    n_known = known.sum(axis=1)
    if (n_known == 0).any():
        raise ValueError("training_batch needs stars with at least one known token")
    rows = np.arange(len(batch_indices))
    # uniform target among known positions: the largest of uniform keys, with unknown positions keyed -1
    target_at = np.where(known, rng.random(known.shape), -1.0).argmax(axis=1)
    query, target = tokens[rows, target_at], values[rows, target_at]
    eligible = known.copy()
    eligible[rows, target_at] = False
    # a random order of the eligible positions (the others sorted last), of which the first n_inputs are kept
    order = np.argsort(np.where(eligible, rng.random(known.shape), np.inf), axis=1)
    n_inputs = rng.integers(0, n_known, endpoint=False) if len(rows) else np.zeros(0, dtype=np.int64)
    width = int(n_inputs.max()) if len(rows) else 0
    order = order[:, :width]
    keep = np.arange(width)[None, :] < n_inputs[:, None]
    input_values = np.where(keep, np.take_along_axis(values, order, axis=1), 0.0).astype(np.float32)
    input_tokens = np.where(keep, np.take_along_axis(tokens, order, axis=1), 0)
    return (torch.from_numpy(input_values), torch.from_numpy(input_tokens.astype(np.int64)),
            torch.from_numpy(query.astype(np.int64)), torch.from_numpy(target.astype(np.float32)))


def _usable(table: TokenTable) -> np.ndarray:
    """Indices of the stars with at least one known token (the others cannot supply a target)."""
    return np.flatnonzero(table.known.any(axis=1))


def _weighted_batches(indices: np.ndarray, weights: np.ndarray, batch_size: int,
                      rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches drawn with probability proportional to ``weights``: no star twice in one batch, each batch
    drawn afresh."""
    p = weights[indices] / weights[indices].sum()
    while True:
        yield rng.choice(indices, size=batch_size, replace=False, p=p)


def _index_batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of ``indices``, reshuffled every epoch (each star seen once per epoch)."""
    while True:
        shuffled = rng.permutation(indices)
        for start in range(0, len(shuffled) - batch_size + 1, batch_size):
            yield shuffled[start:start + batch_size]


def _lr_factor(step: int, steps: int, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up then cosine decay to ``floor`` x the peak rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _fixed_validation(table: TokenTable, seed: int, size: int) -> list[tuple[torch.Tensor, ...]]:
    """Validation batches drawn once, so successive validation losses compare the same (input, target) pairs."""
    usable = _usable(table)
    if not len(usable):
        return []
    rng = np.random.default_rng(seed)
    chosen = rng.choice(usable, size=min(size, len(usable)), replace=False)
    return [training_batch(table, chosen[start:start + 2048], rng) for start in range(0, len(chosen), 2048)]


@torch.no_grad()
def _validation_loss(model: StellarEmulator, batches: list[tuple[torch.Tensor, ...]], seed: int) -> float:
    if not batches:
        return float("nan")
    was_training = model.training
    model.eval()
    # the same diffusion steps and noise at every evaluation: the curve then moves only with the weights
    generator = torch.Generator(device=model.device).manual_seed(seed)
    total, count = 0.0, 0
    for batch in batches:
        values, tokens, query, target = (tensor.to(model.device) for tensor in batch)
        total += float(model.loss(values, tokens, query, target, generator=generator)) * len(target)
        count += len(target)
    model.train(was_training)
    return total / count


def train_emulator(train: TokenTable, validation: TokenTable, config: EmulatorConfig, steps: int, batch_size: int,
                   lr: float, seed: int, device: str = "cpu",
                   on_eval: Callable[[int, float, float], None] | None = None, eval_every: int = 250, *,
                   weight_decay: float = 1e-4, grad_clip: float = 1.0, validation_size: int = 8192,
                   noise_draws: int = 1, star_weights: np.ndarray | None = None,
                   ) -> tuple[StellarEmulator, list[dict]]:
    """Train a :class:`StellarEmulator` for ``steps`` optimiser steps; returns it (eval mode) and its curve.

    AdamW with a linear warm-up (5% of the steps, at most 500) and cosine decay, gradient-norm clipping at
    ``grad_clip``; each star's target is scored at ``noise_draws`` diffusion draws. ``star_weights`` (one per
    train star) draws batches by weight instead of one pass per epoch, e.g. so a small catalogue is not drowned. Every ``eval_every`` steps and at the end a row {step, train_loss (mean since the previous row),
    validation_loss, lr} is appended and passed to ``on_eval(step, train_loss, validation_loss)``. The validation
    loss uses at most ``validation_size`` stars with fixed subsets, diffusion steps and noise. A config without
    names takes the table's; on CPU the run is deterministic for a seed.
    """
    config = config if config.names else config.with_names(train.names)
    if train.names != config.names or validation.names != config.names:
        raise ValueError("the train and validation tables must use the config's names, in its order")
    usable = _usable(train)
    if not len(usable):
        raise ValueError("the training table has no star with a known measurement")
    batch_size = min(batch_size, len(usable))
    torch.manual_seed(seed)  # weights, dropout and the diffusion steps and noise of the training loss
    model = StellarEmulator(config).to(device)
    # the fused kernel avoids a per-tensor Python loop: ~1.5x faster steps for a small model on CPU
    fused = torch.device(device).type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    warmup = max(1, min(500, steps // 20))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps, warmup))
    rng = np.random.default_rng(seed)
    if star_weights is None:
        batches = _index_batches(usable, batch_size, rng)
    else:
        if len(star_weights) != len(train) or not np.all(np.asarray(star_weights) > 0):
            raise ValueError("star_weights needs one positive weight per train star")
        batches = _weighted_batches(usable, np.asarray(star_weights, dtype=np.float64), batch_size, rng)
    validation_batches = _fixed_validation(validation, seed + 1, validation_size)
    curve: list[dict] = []
    running, counted = torch.zeros((), device=device), 0  # summed on the device: no host sync every step
    model.train()
    for step in range(1, steps + 1):
        values, tokens, query, target = (tensor.to(device) for tensor in training_batch(train, next(batches), rng))
        loss = model.loss(values, tokens, query, target, noise_draws=noise_draws)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        optimizer.step()
        scheduler.step()
        running, counted = running + loss.detach(), counted + 1
        if step % eval_every == 0 or step == steps:
            row = {"step": step, "train_loss": float(running) / counted,
                   "validation_loss": _validation_loss(model, validation_batches, seed + 2),
                   "lr": optimizer.param_groups[0]["lr"]}
            curve.append(row)
            running, counted = torch.zeros((), device=device), 0
            if on_eval is not None:
                on_eval(step, row["train_loss"], row["validation_loss"])
    return model.eval(), curve


def save_emulator(model: StellarEmulator, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write config and weights to ONE file, torch.save of {format, format_version, config, state_dict, extra}.

    ``extra`` travels in the same file (e.g. the per-name standardisation, the MLflow run id); it must hold only
    what ``torch.load(weights_only=True)`` accepts: str, int, float, bool, None, lists, tuples, dicts, tensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
               "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
               "extra": dict(extra or {})}
    staging = path.with_name(path.name + ".tmp")
    torch.save(payload, staging)
    staging.replace(path)  # a reader never sees a half-written file
    return path


def _read_payload(path: str | Path) -> dict[str, Any]:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a stellar emulator file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has stellar emulator format version {payload.get('format_version')!r}; "
                         f"this code reads version {FORMAT_VERSION}")
    return payload


def read_emulator_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` dict saved with an emulator."""
    return dict(_read_payload(path).get("extra") or {})


def load_emulator(path: str | Path, device: str | torch.device = "cpu") -> StellarEmulator:
    """Load a model written by :func:`save_emulator`; returned in eval mode on ``device``."""
    payload = _read_payload(path)
    model = StellarEmulator(EmulatorConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def predict(model: StellarEmulator, inputs: Sequence[Mapping[str, float]], target: str, n_samples: int,
            seed: int, chunk_rows: int = 8192) -> np.ndarray:
    """Posterior samples of ``target`` for each star, [n_stars, n_samples], from named standardised inputs.

    ``inputs[i]`` maps names to values for star i (a non-finite value counts as missing; an empty dict gives the
    prior). Stars are processed in chunks of at most ``chunk_rows`` sampling chains (about 8k keep the working set
    cache-sized on CPU), with one generator seeded by ``seed``, so a call is reproducible.
    """
    names = model.config.names
    if target not in names:
        raise ValueError(f"unknown target {target!r}; the model knows {', '.join(names)}")
    unknown = sorted({name for star in inputs for name in star} - set(names))
    if unknown:
        raise ValueError(f"unknown input names: {', '.join(unknown)}")
    with_target = [i for i, star in enumerate(inputs) if target in star]
    if with_target:
        raise ValueError(f"target {target!r} is among the inputs of star(s) {with_target[:10]}")
    width = max((len(star) for star in inputs), default=0)
    values = np.full((len(inputs), width), np.nan, dtype=np.float32)
    tokens = np.zeros((len(inputs), width), dtype=np.int64)
    for i, star in enumerate(inputs):
        for j, (name, value) in enumerate(star.items()):
            values[i, j], tokens[i, j] = value, names.index(name) + 1
    return sample_arrays(model, values, tokens, names.index(target) + 1, n_samples, seed, chunk_rows)


def sample_arrays(model: StellarEmulator, values: np.ndarray, tokens: np.ndarray, query_token: int, n_samples: int,
                  seed: int, chunk_rows: int = 8192) -> np.ndarray:
    """Posterior samples [n_stars, n_samples] of the name ``query_token`` for padded inputs ``values``/``tokens``
    [n_stars, L] (token 0 or a non-finite value: missing). Stars go in chunks of at most ``chunk_rows`` sampling
    chains (about 8k keep the working set cache-sized on CPU), with one generator seeded by ``seed``, so a call is
    reproducible."""
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    query = torch.full((len(values),), query_token, dtype=torch.long)
    stars_per_chunk = max(1, chunk_rows // max(1, n_samples))
    out = np.empty((len(values), n_samples), dtype=np.float32)
    for start in range(0, len(values), stars_per_chunk):
        stop = start + stars_per_chunk
        samples = model.sample(torch.from_numpy(np.ascontiguousarray(values[start:stop], dtype=np.float32)).to(device),
                               torch.from_numpy(np.ascontiguousarray(tokens[start:stop], dtype=np.int64)).to(device),
                               query[start:stop].to(device), n_samples, generator=generator)
        out[start:stop] = samples.cpu().numpy()
    return out
