"""The shard's pictures: a contact sheet that spans the shard, and quarantine counts by reason."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aion_assets.cutouts.plots import (
    CAPTION_PX,
    GAP_PX,
    MAX_REASONS,
    SHEET_COLUMNS,
    THUMB_PX,
    contact_sheet_png,
    count_reasons,
    evenly_spaced,
    quarantine_reasons_png,
)

TILE_W, TILE_H = THUMB_PX + GAP_PX, THUMB_PX + GAP_PX + CAPTION_PX


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)


def _solid_cutouts(n: int) -> np.ndarray:
    """Cutout i is one flat colour whose red channel says i."""
    images = np.zeros((n, 160, 160, 3), dtype=np.uint8)
    images[..., 0] = (np.arange(n) * 8)[:, None, None]
    images[..., 2] = 200
    return images


def test_evenly_spaced_covers_first_and_last() -> None:
    assert evenly_spaced(5, 24).tolist() == [0, 1, 2, 3, 4]
    picked = evenly_spaced(30, 24)
    assert len(picked) == 24 and picked[0] == 0 and picked[-1] == 29 and np.all(np.diff(picked) > 0)


def test_contact_sheet_is_a_grid_spanning_the_shard() -> None:
    png = contact_sheet_png(_solid_cutouts(30), [f"object-{i}" for i in range(30)])
    assert len(png) < 150_000
    pixels = _rgb(png)
    assert pixels.shape == (3 * TILE_H, SHEET_COLUMNS * TILE_W, 3)  # 24 of 30 in 8 columns
    first, last = pixels[THUMB_PX // 2, THUMB_PX // 2], pixels[2 * TILE_H + THUMB_PX // 2, 7 * TILE_W + THUMB_PX // 2]
    assert abs(first[0] - 0) <= 4 and abs(last[0] - 29 * 8) <= 4  # the first and the last cutout of the shard
    assert abs(first[2] - 200) <= 4


def test_contact_sheet_of_a_few_cutouts_has_as_many_columns() -> None:
    assert _rgb(contact_sheet_png(_solid_cutouts(3))).shape[:2] == (TILE_H, 3 * TILE_W)


def test_contact_sheet_of_an_empty_shard_says_so() -> None:
    pixels = _rgb(contact_sheet_png(np.zeros((0, 160, 160, 3), dtype=np.uint8)))
    assert pixels.shape[0] < TILE_H and (pixels < 128).any()  # a line of text, no grid


def test_reasons_are_counted_without_their_particulars() -> None:
    counts = count_reasons([
        "missing file 'images/a.jpg'", "missing file 'images/b.jpg'",
        "image path '../../etc/passwd' escapes the release folder",
        "does not decode: OSError: truncated", "does not decode: ValueError: bad header",
    ])
    assert counts == {"missing file '…'": 2, "does not decode": 2,
                      "image path '…' escapes the release folder": 1}
    assert list(counts) == ["missing file '…'", "does not decode", "image path '…' escapes the release folder"]


def _red_bar_columns(png: bytes) -> np.ndarray:
    pixels = _rgb(png)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    return np.flatnonzero(red.any(axis=0))


def test_quarantine_chart_grows_with_reasons_and_caps_them() -> None:
    heights = [_rgb(quarantine_reasons_png({f"reason {i}": i + 1 for i in range(n)})).shape[0]
               for n in (1, 4, MAX_REASONS, 3 * MAX_REASONS)]
    assert heights[0] < heights[1] < heights[2] == heights[3]


def test_long_reasons_are_shortened_so_the_bars_keep_their_room() -> None:
    short = _red_bar_columns(quarantine_reasons_png({"missing file": 3, "too small": 1}))
    long = _red_bar_columns(quarantine_reasons_png({"does not decode: " + "x" * 400: 3, "too small": 1}))
    assert long.size > 0.5 * short.size  # an unshortened label would squeeze the bars to nothing


def test_nothing_quarantined_draws_a_message() -> None:
    pixels = _rgb(quarantine_reasons_png({}))
    assert pixels.shape[0] < _rgb(quarantine_reasons_png({"x": 1})).shape[0]
    assert not _red_bar_columns(quarantine_reasons_png({})).size and (pixels < 128).any()
