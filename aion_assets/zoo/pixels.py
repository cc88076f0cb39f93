"""The study's images: canonical 160 px cutouts from the lake, resized once per run to the configured side."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey, cutout_array_path


def resize_uint8(pixels: np.ndarray, side: int, chunk: int = 512) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, side, side, 3] (bilinear, antialiased), in chunks to bound memory."""
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] RGB cutouts, got {pixels.shape}")
    if pixels.shape[1:3] == (side, side):
        return torch.from_numpy(np.ascontiguousarray(pixels))
    parts = []
    for start in range(0, len(pixels), chunk):
        x = torch.from_numpy(np.array(pixels[start:start + chunk])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        parts.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous())
    return torch.cat(parts) if parts else torch.zeros((0, side, side, 3), dtype=torch.uint8)


def load_pixels(lake: Lake, objects: pl.DataFrame, side: int) -> torch.Tensor:
    """uint8 [N, side, side, 3] of ``objects`` (columns release, shard, row), in the frame's order; each shard's
    array is opened once, memory-mapped."""
    if objects.is_empty():
        return torch.zeros((0, side, side, 3), dtype=torch.uint8)
    indexed = objects.select("release", "shard", "row").with_row_index("_order")
    out = torch.empty((len(indexed), side, side, 3), dtype=torch.uint8)
    for (release, shard), group in indexed.group_by(["release", "shard"], maintain_order=True):
        array = lake.read_array(*cutout_array_path(str(ShardKey(release, shard)), "rgb"), mmap=True)
        rows = group["row"].to_numpy()
        order = np.argsort(rows, kind="stable")  # ascending reads of a memory-mapped file
        resized = resize_uint8(array[rows[order]], side)
        out[torch.from_numpy(group["_order"].to_numpy()[order].astype(np.int64))] = resized
    return out
