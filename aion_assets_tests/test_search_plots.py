"""Training curves, evaluation bars and the search gallery: PNGs with the layout a reader relies on."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
from PIL import Image

from aion_assets.search.plots import (
    GALLERY_COLUMNS,
    IRRELEVANT_COLOUR,
    RELEVANT_COLOUR,
    ROW_TITLE_PX,
    THUMB_PX,
    TILE_GAP_PX,
    eval_bars_png,
    search_gallery_png,
    training_curves_png,
)

TARGETS = ("spiral_arms", "mergers", "edge_on_disks", "rings", "lenses")
METHODS = ("text_search", "image_similarity", "random", "reranked")


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)


def _near(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.abs(pixel - np.array(colour)).max() <= tolerance)


def _history(epochs: int, peak_epoch: int) -> list[dict]:
    """TrainResult.history rows: epoch 0 is the untrained heads (no training loss)."""
    return [{"epoch": e, "train_loss": None if e == 0 else 3.0 / e, "val_loss": 4.0 - 0.05 * e,
             "val_mrr": 0.3 - 0.01 * abs(e - peak_epoch), "val_median_rank": 10.0, "lr": 1e-3}
            for e in range(epochs + 1)]


def _gold_pixels(png: bytes) -> int:
    pixels = _rgb(png)
    return int(((pixels[..., 0] > 230) & (pixels[..., 1] > 190) & (pixels[..., 1] < 235)
                & (pixels[..., 2] < 40)).sum())


def test_training_curves_mark_the_selected_epoch_only_when_a_best_seed_is_given() -> None:
    histories = {0: _history(20, 12), 1: _history(20, 8), 2: _history(20, 15)}
    unmarked, marked = training_curves_png(histories), training_curves_png(histories, best_seed=1)
    assert len(marked) < 150_000 and _rgb(marked).shape == _rgb(unmarked).shape == (306, 810, 3)
    assert _gold_pixels(unmarked) == 0 and _gold_pixels(marked) > 20  # the selected epoch's star


def test_training_curves_star_sits_at_the_best_epoch() -> None:
    early, late = (training_curves_png({0: _history(20, peak)}, best_seed=0) for peak in (2, 18))

    def star_column(png: bytes) -> float:
        pixels = _rgb(png)
        gold = (pixels[..., 0] > 230) & (pixels[..., 1] > 190) & (pixels[..., 2] < 40)
        return float(np.flatnonzero(gold.any(axis=0)).mean())

    assert star_column(early) < star_column(late)
    assert _gold_pixels(training_curves_png({0: _history(20, 18)}, 0, selected_epoch=3)) > 20


def _eval_rows(pools: tuple[str, ...], methods: tuple[str, ...] = METHODS) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"target": t, "pool": p, "method": m, "metric": metric, "value": float(rng.random()),
             "n_relevant": 10, "pool_size": 100, "model_version": 1, "created_at": datetime.now(timezone.utc)}
            for t in TARGETS for p in pools for m in methods for metric in ("ndcg@10", "ap@100")]
    return pl.DataFrame(rows)


def test_eval_bars_have_one_panel_per_pool() -> None:
    both = eval_bars_png(_eval_rows(("release", "survey")))
    one = eval_bars_png(_eval_rows(("survey",)))
    assert len(both) < 150_000
    assert _rgb(both).shape[1] > _rgb(one).shape[1] and _rgb(both).shape[0] == _rgb(one).shape[0]


def test_eval_bars_draw_every_method_in_its_colour() -> None:
    pixels = _rgb(eval_bars_png(_eval_rows(("release",), methods=("text_search", "random"))))
    text_blue = (np.abs(pixels - np.array([31, 119, 180])).max(axis=-1) < 10).sum()
    orange = (np.abs(pixels - np.array([255, 127, 14])).max(axis=-1) < 10).sum()
    assert text_blue > 200 and orange == 0  # no image-similarity rows, no image-similarity bars


def test_eval_bars_draw_the_latest_of_repeated_figures() -> None:
    old = _eval_rows(("release",), methods=("text_search",)).with_columns(value=pl.lit(0.05))
    new = old.with_columns(value=pl.lit(0.95), created_at=pl.col("created_at") + timedelta(days=1))
    blue = np.array([31, 119, 180])

    def bar_pixels(frame: pl.DataFrame) -> int:
        return int((np.abs(_rgb(eval_bars_png(frame)) - blue).max(axis=-1) < 10).sum())

    assert bar_pixels(pl.concat([new, old])) == bar_pixels(new) > 5 * bar_pixels(old)


def test_eval_bars_without_the_metric_say_so() -> None:
    assert _rgb(eval_bars_png(_eval_rows(("release",)), metric="lift@10")).shape[0] < 100


def _results(relevant: list[bool]) -> list[tuple[np.ndarray, bool, str]]:
    grey = np.full((160, 160, 3), 90, dtype=np.uint8)
    return [(grey, r, f"#{i + 1} 0.{900 - i}\n58884890153720{i:04d}") for i, r in enumerate(relevant)]


def test_gallery_grows_by_one_row_per_target_and_holds_ten_results() -> None:
    one = _rgb(search_gallery_png([("mergers: merging galaxies", _results([True] * 12))]))
    five = search_gallery_png([(f"{t}: query", _results([i % 2 == 0 for i in range(10)])) for t in TARGETS])
    assert len(five) < 150_000
    assert _rgb(five).shape[0] == 5 * one.shape[0] and _rgb(five).shape[1] == one.shape[1]
    assert one.shape[1] == GALLERY_COLUMNS * (THUMB_PX + TILE_GAP_PX) + TILE_GAP_PX  # 12 given, 10 drawn


def test_gallery_frames_relevant_green_and_irrelevant_red() -> None:
    pixels = _rgb(search_gallery_png([("rings: a ring galaxy", _results([True, False, False]))]))
    tile = THUMB_PX + TILE_GAP_PX
    middle = ROW_TITLE_PX + THUMB_PX // 2
    for column, colour in ((0, RELEVANT_COLOUR), (1, IRRELEVANT_COLOUR), (2, IRRELEVANT_COLOUR)):
        left_edge = TILE_GAP_PX + column * tile + 1
        assert _near(pixels[middle, left_edge], colour), (column, pixels[middle, left_edge])
        assert _near(pixels[middle, left_edge + THUMB_PX // 2], (90, 90, 90))  # the cutout inside the frame
    # the tick under the relevant one is green; the crosses are red
    caption = pixels[ROW_TITLE_PX + THUMB_PX:, :]
    green = (np.abs(caption - np.array(RELEVANT_COLOUR)).max(axis=-1) < 40).any(axis=0)
    red = (np.abs(caption - np.array(IRRELEVANT_COLOUR)).max(axis=-1) < 40).any(axis=0)
    assert np.flatnonzero(green).max() < tile and np.flatnonzero(red).min() >= tile


def test_gallery_without_rows_draws_a_message() -> None:
    assert _rgb(search_gallery_png([])).shape[0] < 100
