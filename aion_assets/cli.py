"""`aion`: the command line over the stack. Each domain contributes its commands from its `commands.py`."""

from __future__ import annotations

import subprocess
import sys
import time

import click

from aion_assets.platform.settings import PROJECT_ROOT, SettingsError, get_settings, subprocess_env


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """aion_assets: semantic search over astronomical image archives, as Dagster assets."""
    try:
        get_settings()  # a bad setting is one line naming its variable, before any command starts work
    except SettingsError as error:
        raise click.UsageError(str(error)) from None


def _definitions():
    from aion_assets.definitions import defs

    return defs


@main.command()
@click.argument("selection")
@click.option("--partition", "partitions", multiple=True, help="Partition key(s); default: all known.")
def materialize(selection: str, partitions: tuple[str, ...]) -> None:
    """Materialize SELECTION (Dagster's asset selection syntax, e.g. group:cutouts or key:raw_cutouts+)."""
    from dagster import DagsterError

    from aion_assets.runner import materialize as run_selection
    from aion_assets.runner import plan_runs, stack_instance

    defs = _definitions()
    try:
        plan_runs(defs, selection)
    except (ValueError, DagsterError) as error:  # a typo in the selection: one line, not a traceback
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    instance = stack_instance()
    summaries = run_selection(defs, selection, instance, partition_keys=list(partitions) or None)
    failed = [s for s in summaries if not s.success]
    click.echo(f"{len(summaries)} run(s), {len(failed)} failed")
    sys.exit(1 if failed else 0)


DEMO_QUERIES = (
    "merging galaxies with tidal tails",
    "a ring galaxy with a prominent ring around the centre",
    "a gravitational lens with blue arcs around a red galaxy",
)


@main.command()
def demo() -> None:
    """The main job on the embedded default: ingest every release, describe, embed, train, index, evaluate."""
    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.runner import materialize as run_selection
    from aion_assets.runner import stack_instance

    releases_dir = get_settings().releases_dir
    if releases_dir is None:
        click.echo("no release folder: set AION_RELEASES_DIR=/path/to/releases (a folder of release folders)")
        sys.exit(2)
    instance = stack_instance()
    added = register_release_partitions(instance)
    click.echo(f"releases in {releases_dir}: {len(added)} new partition(s)")
    started = time.perf_counter()
    summaries = run_selection(_definitions(), "*", instance)
    failed = [s for s in summaries if not s.success]
    click.echo(f"\n{len(summaries)} run(s) in {time.perf_counter() - started:.0f} s, {len(failed)} failed")
    _print_demo_results()
    click.echo("\nOpen the UI on the same instance: make ui  (dagster dev on http://127.0.0.1:3000)")
    sys.exit(1 if failed else 0)


def _print_demo_results() -> None:
    import polars as pl

    from aion_assets.search.service import SearchService

    service = SearchService.from_environment()
    warehouse = service.warehouse
    tables = warehouse.tables()
    with pl.Config(tbl_rows=60, tbl_cols=12, fmt_str_lengths=40, tbl_width_chars=140):
        if "release_summary" in tables:
            click.echo("\nrelease_summary:")
            click.echo(warehouse.query("SELECT * FROM release_summary ORDER BY release, label_name"))
        if "eval_results" in tables:
            from aion_assets.search.report import figures_markdown, latest_figures

            click.echo("\nretrieval figures of the served model, both pools (`aion report` prints this table; "
                       "`aion report --out report.html` draws it):")
            click.echo(figures_markdown(latest_figures(warehouse.query("SELECT * FROM eval_results"))))
    for query in DEMO_QUERIES:
        try:
            results = service.search(query, k=5)
        except FileNotFoundError as error:
            click.echo(f"search unavailable: {error}")
            return
        click.echo(f"\naion search {query!r} --k 5")
        for row in results.iter_rows(named=True):
            click.echo(f"  {row['rank']}  {row['score']:.3f}  {row['release']:<20} {row['object_id']}")
    click.echo(f"\nwarehouse: {get_settings().warehouse_path}  (try: aion sql \"SELECT * FROM eval_leaderboard\")")


@main.command()
@click.option("--port", default=3000, show_default=True)
def ui(port: int) -> None:
    """Open the Dagster UI (dagster dev) on 127.0.0.1."""
    from aion_assets.runner import stack_instance

    stack_instance()
    # dagster dev finds its instance through DAGSTER_HOME: the child gets the settings' folder, the one
    # `aion demo` and `aion materialize` write their runs to.
    env = subprocess_env()
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={env['DAGSTER_HOME']})")
    raise SystemExit(subprocess.call(
        [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)], env=env,
    ))


def _register_domain_commands() -> None:
    import importlib

    for module_name in DOMAIN_COMMAND_MODULES:
        module = importlib.import_module(module_name)
        for command in module.commands:
            main.add_command(command)


# Each module exposes `commands: list[click.Command]` and imports its heavy dependencies inside the commands.
DOMAIN_COMMAND_MODULES: list[str] = [
    "aion_assets.cutouts.commands",
    "aion_assets.sql_models.commands",
    "aion_assets.search.commands",
    "aion_assets.search.report_command",
    "aion_assets.bench.commands",
]

_register_domain_commands()
