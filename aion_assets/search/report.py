"""`aion report`: the evaluation figures as the README's Markdown table and as a self-contained HTML page.
Pure (no dagster).

Only the latest figure of each (target, pool, method, metric) is reported: ``eval_results`` keeps every
evaluation ever run, and a table that mixed runs would compare numbers from different models.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aion_assets.search.targets import TARGETS

if TYPE_CHECKING:
    import polars as pl

GROUP = ("target", "pool", "method", "metric")
# (column header, method, metric) of the figures table, in the README's order.
FIGURE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("nDCG@10 text search", "text_search", "ndcg@10"),
    ("nDCG@10 image similarity", "image_similarity", "ndcg@10"),
    ("nDCG@10 random", "random", "ndcg@10"),
    ("AP@100 text search", "text_search", "ap@100"),
    ("lift@10 text search", "text_search", "lift@10"),
)
POOL_ORDER = ("release", "survey", "leave_one_release_out")
TARGET_WORDS = {"edge_on": "edge-on"}  # where a target's name loses a hyphen
ALL_METRICS = ("ndcg@10", "recall@100", "ap@100", "lift@10")
SURVEY_NOTE = (
    "The survey pool's figures are lower bounds: it ranks objects from every release, and objects from releases "
    "that do not publish the target's label count as non-relevant even when they show it. The "
    "leave_one_release_out pool is the release pool ranked by heads trained without any description of that "
    "release (search_ablations): what a new telescope's archive gets without describing any of it."
)


def latest_figures(eval_results: pl.DataFrame, model_version: int | None = None) -> pl.DataFrame:
    """The latest row (by ``created_at``) of each (target, pool, method, metric), optionally of one model
    version only. Rows from before pools existed count as the labelling release's pool."""
    import polars as pl

    frame = eval_results
    if "pool" not in frame.columns:
        frame = frame.with_columns(pool=pl.lit("release"))
    if model_version is not None:
        frame = frame.filter(pl.col("model_version") == model_version)
    return (frame.sort("created_at", nulls_last=False)
            .unique(subset=list(GROUP), keep="last", maintain_order=True)
            .sort(*GROUP))


def figures_table(latest: pl.DataFrame) -> pl.DataFrame:
    """One row per target x pool (the README's order): target, pool, n_relevant, pool_size and one column per
    :data:`FIGURE_COLUMNS` entry (null where that method or metric was not evaluated)."""
    import polars as pl

    keyed = latest.with_columns(column=pl.concat_str("method", pl.lit("|"), "metric"))
    wide = keyed.pivot(on="column", index=["target", "pool"], values="value", aggregate_function="first")
    sizes = (latest.sort(pl.col("method") != "text_search")  # text search's counts where methods disagree
             .group_by("target", "pool", maintain_order=True)
             .agg(pl.col("n_relevant").first(), pl.col("pool_size").first()))
    columns = [pl.col(f"{method}|{metric}").alias(header) if f"{method}|{metric}" in wide.columns
               else pl.lit(None, dtype=pl.Float64).alias(header) for header, method, metric in FIGURE_COLUMNS]
    table = wide.join(sizes, on=["target", "pool"]).select("target", "pool", "n_relevant", "pool_size", *columns)
    return _in_reading_order(table)


def _in_reading_order(table: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    target_rank = {t.name: i for i, t in enumerate(TARGETS)}
    pool_rank = {p: i for i, p in enumerate(POOL_ORDER)}
    return (table.with_columns(
        _t=pl.col("target").replace_strict(target_rank, default=len(target_rank), return_dtype=pl.Int64),
        _p=pl.col("pool").replace_strict(pool_rank, default=len(pool_rank), return_dtype=pl.Int64))
        .sort("_t", "target", "_p", "pool").drop("_t", "_p"))


def target_label(name: str) -> str:
    """"spiral_arms" -> "spiral arms (gz1-sdss)": the release that publishes the label, as in the README."""
    release = next((t.release for t in TARGETS if t.name == name), None)
    readable = name
    for word, spelled in TARGET_WORDS.items():
        readable = readable.replace(word, spelled)
    readable = readable.replace("_", " ")
    return f"{readable} ({release})" if release else readable


def _display_rows(table: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of :func:`figures_table`, shared by the Markdown and HTML renderings."""
    headers = ["target", "pool", "relevant (pool size)", *(header for header, _, _ in FIGURE_COLUMNS)]
    rows = [[target_label(row["target"]), row["pool"], f"{row['n_relevant']:,} ({row['pool_size']:,})",
             *(_number(row[header], metric) for header, _, metric in FIGURE_COLUMNS)]
            for row in table.iter_rows(named=True)]
    return headers, rows


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if metric.startswith("lift") else f"{value:.3f}"


def figures_markdown(eval_results: pl.DataFrame, model_version: int | None = None) -> str:
    """The README's figures table of the latest figures (see :func:`latest_figures`)."""
    headers, rows = _display_rows(figures_table(latest_figures(eval_results, model_version)))
    lines = ["| " + " | ".join(headers) + " |", "| --- | --- |" + " ---: |" * (len(headers) - 2)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report_html(eval_results: pl.DataFrame, model_version: int | None = None, *, gallery_png: bytes | None = None,
                training_curves_png: bytes | None = None, title: str = "AION-Search evaluation",
                ablations: pl.DataFrame | None = None) -> str:
    """A self-contained HTML page (inline CSS, images as data URIs, no scripts, no links out) of the latest
    figures: the figures table, every metric, the bar charts, the optional pictures and, given the
    `search_ablations` table, the ablation tables."""
    from aion_assets.search.plots import eval_bars_png

    latest = latest_figures(eval_results, model_version)
    headers, rows = _display_rows(figures_table(latest))
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{html.escape(_provenance(latest))}</p>",
        "<h2>Figures</h2>", _html_table(headers, rows),
        f"<p class='note'>{html.escape(SURVEY_NOTE)}</p>",
        "<h2>nDCG@10</h2>", _html_image(eval_bars_png(latest, "ndcg@10"), "nDCG@10 by target, method and pool"),
        "<h2>AP@100</h2>", _html_image(eval_bars_png(latest, "ap@100"), "AP@100 by target, method and pool"),
    ]
    if gallery_png is not None:
        sections += ["<h2>Top text-search results</h2>", _html_image(gallery_png, "top results per target")]
    if training_curves_png is not None:
        sections += ["<h2>Training</h2>", _html_image(training_curves_png, "training curves per seed")]
    sections += ["<h2>Every metric</h2>", _html_table(*_every_metric(latest))]
    if ablations is not None and ablations.height:
        sections += _ablation_sections(ablations)
    return _page(title, "\n".join(sections))


ABLATION_NOTE = (
    "Each row changes one choice from the served ones (`baseline`); cells are text search's mean ± standard "
    "deviation over seeds (a seed ensemble's replicates leave one seed out). Image similarity is the "
    "baseline's reference on the same pools.")


def _ablation_sections(ablations: pl.DataFrame) -> list[str]:
    from aion_assets.search.ablation import ablation_table, probe_table

    sections = ["<h2>Ablations</h2>", f"<p class='note'>{html.escape(ABLATION_NOTE)}</p>"]
    for pools, block in ablations.group_by("pools_exclude", maintain_order=True):
        for metric in ("ndcg@10", "ap@100"):
            table = ablation_table(block, metric)
            sections += [f"<h3>{html.escape(metric)}, pools less {html.escape(str(pools[0]))} objects</h3>",
                         _html_table(table.columns, [[str(c) for c in row] for row in table.rows()])]
        probes = probe_table(block)
        sections += ["<h3>Hubness and artefacts</h3>",
                     _html_table(probes.columns, [[str(c) for c in row] for row in probes.rows()])]
    return sections


def _provenance(latest: pl.DataFrame) -> str:
    versions = sorted({v for v in latest["model_version"].to_list() if v is not None}) \
        if "model_version" in latest.columns else []
    when = latest["created_at"].max() if "created_at" in latest.columns and latest.height else None
    version_text = ", ".join(str(v) for v in versions) or "unregistered"
    return f"model version {version_text}; evaluated {when if when is not None else 'at an unknown time'}"


def _every_metric(latest: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in ALL_METRICS if m in set(latest["metric"].to_list())]
    value_of = {(t, p, m, k): v for t, p, m, k, v in latest.select(*GROUP, "value").iter_rows()}
    keys = _in_reading_order(latest.select("target", "pool", "method").unique()).rows()
    rows = [[target_label(t), p, m.replace("_", " "), *(_number(value_of.get((t, p, m, k)), k) for k in metrics)]
            for t, p, m in keys]
    return ["target", "pool", "method", *metrics], rows


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; } td { text-align: right; }
td:first-child, td:nth-child(2), td:nth-child(3) { text-align: left; } th { background: #f3f3f3; }
.meta { color: #666; } .note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; }
img { max-width: 100%; }
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
