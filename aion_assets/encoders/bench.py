"""``aion bench embed``: end-to-end cutouts/s of image embedding beside the forward pass alone.

End to end = reading the canonical cutout arrays (from the lake, memory-mapped, or arrays given in memory) +
batching + preprocessing + forward, through the same streaming helper ``image_base_embeddings`` uses. The forward
pass alone runs on random cutouts of the same batch shape, preprocessed once. Their ratio says what reading and
preparing the data costs; the aim is >= 0.8.

On a shared machine the CPU available changes from second to second, so the work is cut into rounds and each
round's end-to-end pass is bracketed by forward-only passes; the best round of each kind shows the unloaded
machine, and ``forward_share`` adds a same-window view.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from aion_assets.encoders.image import (
    ImageEncoder,
    embed_shards,
    iter_lake_cutouts,
    preferred_batch_size,
)

if TYPE_CHECKING:
    from aion_assets.platform.lake import Lake


def _random_like(example: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (batch_size, *example.shape[1:])
    if example.dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.normal(size=shape).astype(example.dtype)


def _time_forward(encoder: ImageEncoder, prepared: Any, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        encoder.forward(prepared)
    return time.perf_counter() - start


class _TimedForward:
    """The encoder, with the time spent in ``forward`` during a stream added up (same window as the wall clock)."""

    def __init__(self, encoder: ImageEncoder) -> None:
        self._encoder = encoder
        self.forward_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def preprocess(self, batch: np.ndarray) -> Any:
        return self._encoder.preprocess(batch)

    def forward(self, prepared: Any) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self._encoder.forward(prepared)
        finally:
            self.forward_s += time.perf_counter() - start


def _split_rounds(arrays: list[np.ndarray], rounds: int) -> list[list[np.ndarray]]:
    """Consecutive groups of about equal cutout count; arrays are sliced (lazily, for memory maps) where needed."""
    total = sum(len(a) for a in arrays)
    target = -(-total // rounds)
    groups: list[list[np.ndarray]] = [[]]
    filled = 0
    for array in arrays:
        offset = 0
        while offset < len(array):
            take = min(len(array) - offset, target - filled)
            groups[-1].append(array[offset:offset + take])
            offset += take
            filled += take
            if filled == target:
                groups.append([])
                filled = 0
    return [g for g in groups if g]


def bench_embed(
    encoder: ImageEncoder,
    shards: Sequence[np.ndarray] | None = None,
    *,
    lake: Lake | None = None,
    partition_keys: Sequence[str] | None = None,
    batch_size: int | None = None,
    prefetch: int = 4,
    rounds: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure embedding throughput on real cutout shards (in memory, or the lake's canonical arrays).

    The cutouts are streamed in ``rounds`` consecutive groups; each group's end-to-end pass sits between two
    forward-only passes of half as many batches, so both see the same machine load. Returns:
    cutouts, batch_size, rounds, end_to_end_s, end_to_end_per_s, forward_per_s, ratio (end to end / forward,
    from the totals), ratio_median (median of the per-round ratios), forward_share (time inside ``forward``
    during the end-to-end passes / their wall time: the same-window view of what the rest costs), the best
    round's rates and their ratio (end_to_end_best_per_s, forward_best_per_s, ratio_best: what the machine does
    when nothing else runs on it), plus the encoder's name, device and input kind.
    """
    if (shards is None) == (lake is None or partition_keys is None):
        raise ValueError("give either shards, or lake and partition_keys")
    arrays = list(shards) if shards is not None else list(
        iter_lake_cutouts(lake, partition_keys, encoder.input_kind)  # type: ignore[arg-type]
    )
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        raise ValueError("no cutouts to benchmark")
    batch_size = batch_size or preferred_batch_size(encoder)
    cutouts = sum(len(a) for a in arrays)
    prepared = encoder.preprocess(_random_like(arrays[0], batch_size, seed))
    encoder.forward(prepared)  # warm-up: first-call allocations and kernel selection are not throughput

    timed = _TimedForward(encoder)
    end_to_end_s = forward_s = 0.0
    forward_images = 0
    round_ratios = []
    best_end_to_end = best_forward = 0.0
    for group in _split_rounds(arrays, max(1, rounds)):
        group_cutouts = sum(len(a) for a in group)
        n_forward = max(2, round(group_cutouts / batch_size))
        before = _time_forward(encoder, prepared, n_forward // 2)
        start = time.perf_counter()
        stream = embed_shards(timed, group, batch_size, prefetch=prefetch)  # type: ignore[arg-type]
        produced = sum(len(e) for e in stream)
        group_s = time.perf_counter() - start
        after = _time_forward(encoder, prepared, n_forward - n_forward // 2)
        if produced != group_cutouts:
            raise RuntimeError(f"streaming produced {produced} embeddings for {group_cutouts} cutouts")
        end_to_end_s += group_s
        forward_s += before + after
        forward_images += n_forward * batch_size
        round_end_to_end = group_cutouts / group_s
        round_forward = n_forward * batch_size / (before + after)
        round_ratios.append(round_end_to_end / round_forward)
        best_end_to_end = max(best_end_to_end, round_end_to_end)
        best_forward = max(best_forward, round_forward)

    end_to_end_per_s = cutouts / end_to_end_s
    forward_per_s = forward_images / forward_s
    return {
        "encoder": encoder.name,
        "device": str(getattr(encoder, "device", "cpu")),
        "input_kind": encoder.input_kind,
        "cutouts": cutouts,
        "batch_size": batch_size,
        "rounds": len(round_ratios),
        "end_to_end_s": end_to_end_s,
        "end_to_end_per_s": end_to_end_per_s,
        "forward_per_s": forward_per_s,
        "ratio": end_to_end_per_s / forward_per_s,
        "ratio_median": float(np.median(round_ratios)),
        "forward_share": timed.forward_s / end_to_end_s,
        "end_to_end_best_per_s": best_end_to_end,
        "forward_best_per_s": best_forward,
        "ratio_best": best_end_to_end / best_forward,
    }
