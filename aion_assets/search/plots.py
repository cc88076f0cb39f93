"""Pictures of training and evaluation for the asset pages and `aion report`. Pure (no dagster).

Every function returns PNG bytes (see :mod:`aion_assets.platform.plots`); matplotlib and polars are imported
inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from aion_assets.platform.plots import DPI, figure_png, message_png, new_figure, shorten
from aion_assets.search.targets import TARGETS

if TYPE_CHECKING:
    import polars as pl

# One colour per method in every chart, so a reader learns them once.
METHOD_COLOURS = {"text_search": "#1f77b4", "reranked": "#9467bd", "image_similarity": "#ff7f0e",
                  "random": "#9e9e9e"}
POOL_ORDER = ("release", "survey")
RELEVANT_COLOUR = (26, 150, 65)
IRRELEVANT_COLOUR = (215, 25, 28)

GALLERY_COLUMNS = 10
THUMB_PX = 72
FRAME_PX = 5       # the relevance frame is drawn into the thumbnail: it survives any resampling
TILE_GAP_PX = 6
CAPTION_PX = 26
ROW_TITLE_PX = 22


# -- training ----------------------------------------------------------------------------------------------------
def training_curves_png(histories: Mapping[int, Sequence[Mapping[str, float | None]]], best_seed: int | None = None,
                        *, selected_epoch: int | None = None) -> bytes:
    """Per seed: training and validation loss per epoch (left) and validation MRR (right).

    ``histories`` maps a seed to its ``TrainResult.history`` rows. The best seed's selected epoch is marked:
    ``selected_epoch`` when given, else that seed's epoch of highest val_mrr (the default selection metric).
    """
    from matplotlib import colormaps

    figure = new_figure(9.0, 3.4)
    loss_axes, mrr_axes = figure.subplots(1, 2)
    colours = colormaps["tab10"]
    for index, (seed, history) in enumerate(sorted(histories.items())):
        colour = colours(index % 10)
        width = 2.2 if seed == best_seed else 1.2
        label = f"seed {seed}" + (" (best)" if seed == best_seed else "")
        loss_axes.plot(*_series(history, "train_loss"), color=colour, lw=width, label=f"{label} train")
        loss_axes.plot(*_series(history, "val_loss"), color=colour, lw=width, ls="--", label=f"{label} val")
        mrr_axes.plot(*_series(history, "val_mrr"), color=colour, lw=width, label=label)
    if best_seed is not None and best_seed in histories:
        _mark_selected_epoch(mrr_axes, histories[best_seed], selected_epoch)
    loss_axes.set(title="InfoNCE loss (solid: train, dashed: validation)", xlabel="epoch", ylabel="loss")
    mrr_axes.set(title="validation MRR (text → own image)", xlabel="epoch", ylabel="MRR")
    for axes in (loss_axes, mrr_axes):
        axes.title.set_fontsize(9)
        axes.grid(alpha=0.3)
        axes.spines[["top", "right"]].set_visible(False)
    mrr_axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure_png(figure)


def _series(history: Sequence[Mapping[str, float | None]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the epochs that have ``key``: epoch 0 has no training loss."""
    points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
    return [float(e) for e, _ in points], [float(v) for _, v in points]


def _mark_selected_epoch(axes, history: Sequence[Mapping[str, float | None]], selected_epoch: int | None) -> None:
    epochs, mrr = _series(history, "val_mrr")
    if not epochs:
        return
    if selected_epoch is None:
        selected_epoch = int(epochs[int(np.argmax(mrr))])
    if selected_epoch not in epochs:
        return
    value = mrr[epochs.index(selected_epoch)]
    axes.axvline(selected_epoch, color="#444444", lw=0.8, ls=":")
    axes.plot([selected_epoch], [value], marker="*", ms=14, color="gold", mec="black", zorder=5)
    axes.annotate(f"selected: epoch {selected_epoch}\nMRR {value:.3f}", (selected_epoch, value),
                  xytext=(8, -26), textcoords="offset points", fontsize=7)


# -- evaluation ----------------------------------------------------------------------------------------------------
def eval_bars_png(figures: pl.DataFrame, metric: str = "ndcg@10") -> bytes:
    """Grouped bars of ``metric``: one panel per pool, targets on x, one bar per method.

    ``figures`` holds ``eval_results`` rows; where a (target, pool, method) has several rows the latest
    ``created_at`` is drawn.
    """
    from matplotlib.patches import Patch

    rows = _metric_rows(figures, metric)
    if rows.is_empty():
        return message_png(f"no {metric} figures")
    pools = _ordered(rows["pool"].unique().to_list(), POOL_ORDER)
    methods = _ordered(rows["method"].unique().to_list(), tuple(METHOD_COLOURS))
    figure = new_figure(max(5.0, 4.4 * len(pools)), 3.6)
    panels = np.atleast_1d(figure.subplots(1, len(pools), sharey=True, squeeze=False)[0])
    for axes, pool in zip(panels, pools):
        _bars_panel(axes, rows.filter(rows["pool"] == pool), methods, pool)
    panels[0].set_ylabel(metric)
    handles = [Patch(color=METHOD_COLOURS.get(m, "#333333"), label=m.replace("_", " ")) for m in methods]
    figure.legend(handles=handles, loc="upper center", ncol=len(methods), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    return figure_png(figure)


def _metric_rows(figures: pl.DataFrame, metric: str) -> pl.DataFrame:
    import polars as pl

    rows = figures.filter(pl.col("metric") == metric)
    if "pool" not in rows.columns:  # rows from before pools existed were all on the labelling release
        rows = rows.with_columns(pool=pl.lit("release"))
    if "created_at" in rows.columns:
        rows = rows.sort("created_at", nulls_last=False)
    return rows.unique(subset=["target", "pool", "method"], keep="last", maintain_order=True)


def _ordered(values: list[str], preferred: tuple[str, ...]) -> list[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def _bars_panel(axes, rows: pl.DataFrame, methods: list[str], pool: str) -> None:
    targets = _ordered(rows["target"].unique().to_list(), tuple(t.name for t in TARGETS))
    value_of = {(t, m): v for t, m, v in rows.select("target", "method", "value").iter_rows()}
    width = 0.8 / len(methods)
    for offset, method in enumerate(methods):
        xs = [i - 0.4 + width * (offset + 0.5) for i in range(len(targets))]
        values = [value_of.get((t, method), np.nan) for t in targets]
        bars = axes.bar(xs, values, width, color=METHOD_COLOURS.get(method, "#333333"))
        labels = ["" if np.isnan(v) else f"{v:.2f}" for v in values]  # a method not run on a target: no bar
        axes.bar_label(bars, labels=labels, fontsize=5.5, padding=1, rotation=90)
    axes.set_xticks(range(len(targets)), [t.replace("_", "\n") for t in targets], fontsize=8)
    axes.set_xlim(-0.5, len(targets) - 0.5)
    axes.set_title(f"{pool} pool", fontsize=9)
    top = float(np.nanmax(rows["value"].to_numpy())) if rows.height else 1.0
    axes.set_ylim(0, max(1.0, top) * 1.15)
    axes.grid(axis="y", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)


# -- search results ------------------------------------------------------------------------------------------------
def search_gallery_png(rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, bool, str]]]]) -> bytes:
    """One row per target: its title (target name and query) over its top results, each a thumbnail framed
    green (relevant, ✓) or red (not relevant, ✗) with a short caption.

    ``rows`` is ``[(title, [(uint8 HxWx3 image, relevant, caption), ...]), ...]``; at most 10 results a row.
    """
    if not rows:
        return message_png("no search results")
    tile_w = THUMB_PX + TILE_GAP_PX
    row_h = ROW_TITLE_PX + THUMB_PX + CAPTION_PX
    width_px, height_px = GALLERY_COLUMNS * tile_w + TILE_GAP_PX, len(rows) * row_h
    mosaic = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
    figure = new_figure(width_px / DPI, height_px / DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    for row_index, (title, results) in enumerate(rows):
        top = row_index * row_h
        axes.text(TILE_GAP_PX, top + ROW_TITLE_PX - 6, shorten(title, 140), fontsize=8, weight="bold")
        for column, (image, relevant, caption) in enumerate(list(results)[:GALLERY_COLUMNS]):
            x, y = TILE_GAP_PX + column * tile_w, top + ROW_TITLE_PX
            mosaic[y:y + THUMB_PX, x:x + THUMB_PX] = framed_thumbnail(image, relevant)
            _caption(axes, x, y + THUMB_PX, relevant, caption)
    axes.imshow(mosaic, interpolation="nearest", extent=(0, width_px, height_px, 0))
    axes.set_xlim(0, width_px)
    axes.set_ylim(height_px, 0)
    return figure_png(figure, palette=True)


def framed_thumbnail(image: np.ndarray, relevant: bool, size: int = THUMB_PX) -> np.ndarray:
    """The cutout resized to ``size`` with a frame in the relevance colour drawn over its border."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    thumb = np.array(picture.resize((size, size), Image.Resampling.BILINEAR))
    colour = RELEVANT_COLOUR if relevant else IRRELEVANT_COLOUR
    thumb[:FRAME_PX], thumb[-FRAME_PX:], thumb[:, :FRAME_PX], thumb[:, -FRAME_PX:] = colour, colour, colour, colour
    return thumb


def _caption(axes, x: float, y: float, relevant: bool, caption: str) -> None:
    mark, colour = ("✓", RELEVANT_COLOUR) if relevant else ("✗", IRRELEVANT_COLOUR)
    axes.text(x, y + 3, mark, fontsize=9, weight="bold", va="top", color=np.array(colour) / 255)
    lines = [shorten(line, 13, keep="end") for line in caption.split("\n")[:2]]
    axes.text(x + 12, y + 3, "\n".join(lines), fontsize=6, va="top", linespacing=1.1)

