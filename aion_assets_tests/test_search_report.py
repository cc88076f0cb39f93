"""`aion report`: the README's figures table and the HTML report, from a real eval_results table."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from aion_assets.platform.warehouse import Warehouse
from aion_assets.search.report import figures_markdown, latest_figures, report_html
from aion_assets.search.report_command import commands, report

FIRST_RUN = datetime(2025, 1, 1, tzinfo=timezone.utc)
SECOND_RUN = FIRST_RUN + timedelta(days=1)
POOLS = {"release": {"mergers": (100, 5638), "rings": (202, 399)},
         "survey": {"mergers": (100, 9316), "rings": (202, 9316)}}
METHODS = ("text_search", "image_similarity", "random")
METRICS = ("ndcg@10", "recall@100", "ap@100", "lift@10")


def _figure(target: str, pool: str, method: str, metric: str, run: int) -> float:
    """A distinct, recognisable value per cell and run: run 1 values are below 0.5, run 2 values above."""
    cell = (["mergers", "rings"].index(target) * 100 + list(POOLS).index(pool) * 40
            + METHODS.index(method) * 10 + METRICS.index(metric)) / 1000
    return 0.5 * (run - 1) + cell


def _eval_frame(run: int, model_version: int, created_at: datetime) -> pl.DataFrame:
    rows = [{"target": target, "pool": pool, "method": method, "metric": metric,
             "value": _figure(target, pool, method, metric, run), "n_relevant": n_relevant,
             "pool_size": pool_size, "model_version": model_version, "created_at": created_at}
            for pool, sizes in POOLS.items() for target, (n_relevant, pool_size) in sizes.items()
            for method in METHODS for metric in METRICS]
    return pl.DataFrame(rows, schema_overrides={"model_version": pl.Int64, "created_at": pl.Datetime("us", "UTC")})


@pytest.fixture
def eval_warehouse(warehouse: Warehouse) -> Warehouse:
    """The test stack's own DuckDB warehouse and lake (under tmp_path), so `aion report` reads it too."""
    warehouse.append("eval_results", _eval_frame(1, 1, FIRST_RUN))
    warehouse.append("eval_results", _eval_frame(2, 2, SECOND_RUN))
    return warehouse


def _table_rows(markdown: str) -> list[list[str]]:
    lines = markdown.splitlines()
    assert lines[1].startswith("| --- |")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _expected_row(target: str, label: str, pool: str, run: int) -> list[str]:
    n_relevant, pool_size = POOLS[pool][target]
    return [label, pool, f"{n_relevant:,} ({pool_size:,})",
            *(f"{_figure(target, pool, method, 'ndcg@10', run):.3f}" for method in METHODS),
            f"{_figure(target, pool, 'text_search', 'ap@100', run):.3f}",
            f"{_figure(target, pool, 'text_search', 'lift@10', run):.2f}"]


def _expected_table(run: int) -> list[list[str]]:
    return [_expected_row(target, label, pool, run)
            for target, label in (("mergers", "mergers (gz1-sdss)"), ("rings", "rings (gz-decals-rings)"))
            for pool in ("release", "survey")]


def test_markdown_table_has_one_row_per_target_and_pool_of_the_latest_run(eval_warehouse: Warehouse) -> None:
    markdown = figures_markdown(eval_warehouse.query("SELECT * FROM eval_results"))
    assert markdown.splitlines()[0] == (
        "| target | pool | relevant (pool size) | nDCG@10 text search | nDCG@10 image similarity | "
        "nDCG@10 random | AP@100 text search | lift@10 text search |")
    assert _table_rows(markdown) == _expected_table(run=2)


def test_a_model_version_selects_its_own_figures(eval_warehouse: Warehouse) -> None:
    figures = eval_warehouse.query("SELECT * FROM eval_results")
    assert _table_rows(figures_markdown(figures, model_version=1)) == _expected_table(run=1)
    assert figures_markdown(figures, model_version=2) == figures_markdown(figures)


def test_latest_is_per_figure_not_per_run(eval_warehouse: Warehouse) -> None:
    """A later run that evaluated one cell again replaces that cell only."""
    rerun = _eval_frame(2, 2, SECOND_RUN + timedelta(hours=1)).filter(
        (pl.col("target") == "rings") & (pl.col("pool") == "survey") & (pl.col("method") == "random")
        & (pl.col("metric") == "ndcg@10")).with_columns(value=pl.lit(0.999))
    eval_warehouse.append("eval_results", rerun)
    figures = eval_warehouse.query("SELECT * FROM eval_results")
    latest = latest_figures(figures)
    assert latest.height == 2 * 2 * len(METHODS) * len(METRICS)
    expected = _expected_table(run=2)
    expected[3][5] = "0.999"
    assert _table_rows(figures_markdown(figures)) == expected


def test_html_report_is_self_contained(eval_warehouse: Warehouse) -> None:
    figures = eval_warehouse.query("SELECT * FROM eval_results")
    png = b"\x89PNG\r\n\x1a\nnot-really-a-picture"
    page = report_html(figures, gallery_png=png, training_curves_png=png)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:|//)", page, re.IGNORECASE)
    assert "<script" not in page and "<link" not in page and "http" not in page
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "lower bounds" in page and "rings (gz-decals-rings)" in page
    assert f"{_figure('mergers', 'release', 'text_search', 'ndcg@10', 2):.3f}" in page
    assert f"{_figure('mergers', 'release', 'text_search', 'ndcg@10', 1):.3f}" not in page  # latest only
    assert len(re.findall(r"src='", report_html(figures))) == 2  # just the two bar charts


def test_report_command_prints_the_table_and_writes_the_page(eval_warehouse: Warehouse, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(report, ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == figures_markdown(eval_warehouse.query("SELECT * FROM eval_results")) + "\n"
    assert out.read_text().startswith("<!DOCTYPE html>")
    old = CliRunner().invoke(report, ["--model-version", "1"])
    assert _table_rows(old.stdout) == _expected_table(run=1)


def test_report_command_without_eval_results_says_so_in_one_line(aion_home) -> None:
    result = CliRunner().invoke(report, [])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "no eval_results" in result.output


def test_report_command_for_an_unknown_model_version_says_so_in_one_line(eval_warehouse: Warehouse) -> None:
    result = CliRunner().invoke(report, ["--model-version", "99"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: eval_results holds no figures for model version 99"]


def test_module_exposes_the_command_for_the_cli() -> None:
    assert [c.name for c in commands] == ["report"]


def test_html_report_shows_the_ablation_tables_with_their_spread(eval_warehouse: Warehouse) -> None:
    from aion_assets.search.ablation import summarise

    rows = []
    for variant, values in (("baseline", (0.5, 0.7)), ("text=mean", (0.4, 0.4))):
        for replicate, value in enumerate(values):
            rows += [{"variant": variant, "replicate": replicate, "target": "rings", "pool": pool,
                      "method": "text_search", "metric": metric, "value": value, "n_relevant": 3, "pool_size": 9}
                     for pool in ("release", "leave_one_release_out") for metric in ("ndcg@10", "ap@100")]
        rows.append({"variant": variant, "replicate": 0, "target": "-", "pool": "all", "method": "text_search",
                     "metric": "probe_artefacts_in_top10", "value": 2.0, "n_relevant": 0, "pool_size": 0})
    rows += [{"variant": "baseline", "replicate": -1, "target": "rings", "pool": "release",
              "method": "image_similarity", "metric": "ndcg@10", "value": 0.25, "n_relevant": 3, "pool_size": 9}]
    ablations = summarise(pl.DataFrame(rows)).with_columns(pools_exclude=pl.lit("described"))
    page = report_html(eval_warehouse.query("SELECT * FROM eval_results"), ablations=ablations)
    assert "<h2>Ablations</h2>" in page and "rings/leave_one_release_out" in page
    # mean ± sample std over the two seeds: (0.5, 0.7) -> 0.6 ± 0.141; identical seeds -> ± 0.0
    assert "0.6 ± 0.141" in page and "0.4 ± 0.0" in page
    assert "image similarity (baseline)" in page and "0.25 ± 0.0" in page
    assert "probe_artefacts_in_top10" in page and "Ablations" not in report_html(
        eval_warehouse.query("SELECT * FROM eval_results"))
