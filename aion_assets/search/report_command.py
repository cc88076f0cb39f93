"""`aion report`: the latest evaluation figures as a Markdown table (stdout) and optionally an HTML report."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(name="report")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a self-contained HTML report (tables and charts) to this file.")
@click.option("--model-version", type=int, default=None,
              help="Figures of this registered model version; default: the latest figures.")
def report(out: Path | None, model_version: int | None) -> None:
    """Print the README's figures table from eval_results; with --out, write the HTML report too."""
    from aion_assets.platform.warehouse import stack_warehouse
    from aion_assets.search.report import figures_markdown, latest_figures, report_html

    warehouse = stack_warehouse()
    if "eval_results" not in warehouse.tables():
        _fail("no eval_results in the warehouse yet: materialize retrieval_eval (e.g. `aion demo`) first")
    latest = latest_figures(warehouse.query("SELECT * FROM eval_results"), model_version)
    if latest.is_empty():
        which = f" for model version {model_version}" if model_version is not None else ""
        _fail(f"eval_results holds no figures{which}")
    click.echo(figures_markdown(latest))
    if out is not None:
        version = model_version if model_version is not None else int(latest["model_version"].max())
        gallery, curves = _pictures(warehouse.lake, version)
        out.parent.mkdir(parents=True, exist_ok=True)
        ablations = (warehouse.query("SELECT * FROM search_ablations")
                     if "search_ablations" in warehouse.tables() else None)
        out.write_text(report_html(latest, gallery_png=gallery, training_curves_png=curves, ablations=ablations),
                       encoding="utf-8")
        click.echo(f"report written to {out}", err=True)  # stdout stays the table alone, ready to paste


def _pictures(lake, version: int) -> tuple[bytes | None, bytes | None]:
    """The gallery and training curves the version's materializations drew, when the lake still holds them."""
    from aion_assets.platform.layout import evaluation_gallery_path, training_curves_path

    def read(parts: tuple[str, ...]) -> bytes | None:
        return lake.read_bytes(*parts) if lake.exists(*parts) else None

    return read(evaluation_gallery_path(version)), read(training_curves_path(version))


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


commands = [report]
