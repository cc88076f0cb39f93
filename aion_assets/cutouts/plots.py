"""Pictures of one ingested shard for the asset page: a contact sheet of its cutouts and its quarantine reasons.
Pure (no dagster)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from aion_assets.platform.plots import DPI, figure_png, message_png, new_figure, shorten

SHEET_COLUMNS = 8
THUMB_PX = 80     # cutouts are shown at this size: enough to see a galaxy, small enough to embed
GAP_PX = 4
CAPTION_PX = 14
LABEL_CHARS = 40
MAX_REASONS = 12


def evenly_spaced(n_items: int, max_items: int) -> np.ndarray:
    """Indices of at most ``max_items`` items spread over ``n_items``: the whole shard, not its first rows."""
    if n_items <= max_items:
        return np.arange(n_items)
    return np.unique(np.linspace(0, n_items - 1, max_items).round().astype(np.int64))


def _thumbnail(image: np.ndarray, size: int = THUMB_PX) -> np.ndarray:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    return np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR))


def contact_sheet_png(images: np.ndarray, captions: Sequence[str] | None = None, max_images: int = 24) -> bytes:
    """A grid of up to ``max_images`` evenly spaced cutouts of a uint8 [N, H, W, 3] array, each captioned."""
    picked = evenly_spaced(len(images), max_images)
    if not len(picked):
        return message_png("no cutouts accepted")
    columns = min(SHEET_COLUMNS, len(picked))
    rows = math.ceil(len(picked) / columns)
    tile_w, tile_h = THUMB_PX + GAP_PX, THUMB_PX + GAP_PX + CAPTION_PX
    mosaic = np.full((rows * tile_h, columns * tile_w, 3), 255, dtype=np.uint8)
    for slot, index in enumerate(picked):
        y, x = (slot // columns) * tile_h, (slot % columns) * tile_w
        mosaic[y:y + THUMB_PX, x:x + THUMB_PX] = _thumbnail(images[index])
    figure, axes = _pixel_exact_axes(mosaic.shape[1], mosaic.shape[0])
    axes.imshow(mosaic, interpolation="nearest")
    for slot, index in enumerate(picked):
        if captions is not None:
            y, x = (slot // columns) * tile_h, (slot % columns) * tile_w
            axes.text(x + THUMB_PX / 2, y + THUMB_PX + 2, shorten(str(captions[index]), 13, keep="end"),
                      ha="center", va="top", fontsize=6.5)
    return figure_png(figure, palette=True)


def _pixel_exact_axes(width_px: int, height_px: int):
    """A figure exactly the mosaic's size with one frameless axes over it: each mosaic pixel is one PNG pixel."""
    figure = new_figure(width_px / DPI, height_px / DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    return figure, axes


def reason_kind(reason: str) -> str:
    """A reason without its particulars, so "missing file 'a.jpg'" and "missing file 'b.jpg'" count together."""
    kind = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    return re.sub(r"[:(].*$", "", kind).strip() or reason.strip()


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """Quarantine rows per reason kind, most frequent first: the input of :func:`quarantine_reasons_png`."""
    return dict(Counter(reason_kind(str(r)) for r in reasons).most_common())


def quarantine_reasons_png(reasons: Mapping[str, int]) -> bytes:
    """Horizontal bars of quarantined rows by reason, most frequent on top; long reasons are shortened."""
    if not reasons:
        return message_png("no rows quarantined")
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) > MAX_REASONS:  # the tail in one bar, so the chart keeps its size
        ranked = [*ranked[:MAX_REASONS - 1], (f"{len(ranked) - MAX_REASONS + 1} other reasons",
                                              sum(n for _, n in ranked[MAX_REASONS - 1:]))]
    from matplotlib.ticker import MaxNLocator

    labels = [shorten(reason, LABEL_CHARS) for reason, _ in ranked]
    counts = [n for _, n in ranked]
    figure = new_figure(7.0, 0.9 + 0.32 * len(ranked))
    axes = figure.add_subplot()
    bars = axes.barh(range(len(ranked)), counts, color="#c0392b")
    axes.set_yticks(range(len(ranked)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.bar_label(bars, padding=3, fontsize=8)
    axes.set_xlim(0, max(counts) * 1.15)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("quarantined rows")
    axes.set_title(f"quarantine by reason ({sum(counts)} rows)", fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure_png(figure)

