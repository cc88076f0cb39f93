"""`aion`: the command line over the stack. Each domain contributes its commands from its `commands.py`.

Start-up is part of every command's latency, so the domains' modules are imported only when their command runs
(``LAZY_COMMANDS``), and an error is one line on stderr with a non-zero exit (``aion --debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import warnings

import click

from aion_assets.platform.settings import PROJECT_ROOT, SettingsError, get_settings, subprocess_env

# name -> (module, attribute, short help): `aion --help` lists these without importing their modules (a test
# checks that each module still defines its command).
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "releases": ("aion_assets.cutouts.commands", "releases",
                 "List the survey releases in the watched folder (objects, labels, status)."),
    "sql": ("aion_assets.sql_models.commands", "sql",
            "Run a read-only QUERY (SELECT, DESCRIBE, SHOW) against the warehouse."),
    "search": ("aion_assets.search.commands", "search", "Rank cutouts by how well they match TEXT."),
    "similar": ("aion_assets.search.commands", "similar",
                "The image-similarity baseline: cutouts nearest to OBJECT_ID's image."),
    "models": ("aion_assets.search.commands", "models", "The heads versions: MLflow run, training-set size, figures."),
    "prune": ("aion_assets.search.commands", "prune", "Remove old heads versions' lake files."),
    "report": ("aion_assets.search.report_command", "report", "Print the README's figures table from eval_results."),
    "serve": ("aion_assets.app.commands", "serve", "Serve the search page and JSON API from the latest model."),
    "bench": ("aion_assets.bench.commands", "bench", "Run a benchmark; rows land in the bench_results table."),
    "stellar": ("aion_assets.stellar.commands", "stellar",
                "The stellar label emulator: posteriors for any label from any measurements."),
}
_DEBUG_KEY = "aion.debug"


class CommandError(click.ClickException):
    """Any failure of a command, shown as ``error: <message>`` on one line."""

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.message}", err=True)


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none): duckdb and Dagster add pages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class AionGroup(click.Group):
    """The main group: subcommands imported on first use, and every failure as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module_name, attribute, _ = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module_name), attribute)
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The table's short help for commands not imported yet: `aion --help` imports no domain module.
        rows = [(name, LAZY_COMMANDS[name][2]) for name in LAZY_COMMANDS if name not in self.commands]
        rows += [(name, command.get_short_help_str(limit=formatter.width - 20))
                 for name, command in self.commands.items() if not command.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - whatever the command returns
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click shows these itself, as one line (a usage error with its usage)
        except Exception as error:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            raise CommandError(one_line(error)) from error


def quiet_libraries(verbose: bool) -> None:
    """Dagster's beta/preview warnings, MLflow's INFO lines and transformers' loading bars: off unless --verbose."""
    if not verbose:
        # By message, not category: importing dagster's warning classes would cost every command its start-up.
        warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview),")
    from aion_assets.platform.verbosity import set_verbose

    set_verbose(verbose)
    level = logging.INFO if verbose else logging.WARNING
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level)


@click.group(cls=AionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show an error's traceback instead of its one line.")
@click.option("--verbose", is_flag=True, help="Libraries' INFO logs, warnings and progress bars too.")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """aion_assets: semantic search over astronomical image archives, as Dagster assets."""
    ctx.meta[_DEBUG_KEY] = debug
    quiet_libraries(verbose)
    try:
        get_settings()  # a bad setting is one line naming its variable, before any command starts work
    except SettingsError as error:
        raise click.UsageError(str(error)) from None


def _definitions():
    """Built for this command from the settings it runs under (the module-level ``defs`` is the code
    location's, fixed when it was first imported, which in a long-lived process may be another stack's)."""
    from aion_assets.definitions import build_definitions

    return build_definitions()


@main.command()
@click.argument("selection")
@click.option("--partition", "partitions", multiple=True, help="Partition key(s); default: all known.")
@click.option("--config-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML/JSON mapping asset name -> its run config (e.g. stellar_emulator: {preset: reference}).")
def materialize(selection: str, partitions: tuple[str, ...], config_file: str | None) -> None:
    """Materialize SELECTION (Dagster's asset selection syntax, e.g. group:cutouts or key:raw_cutouts+)."""
    from dagster import DagsterError

    from aion_assets.runner import materialize as run_selection
    from aion_assets.runner import plan_runs, read_op_config, stack_instance, unknown_partition_keys

    defs = _definitions()
    try:
        plan_runs(defs, selection)
    except (ValueError, DagsterError) as error:  # a typo in the selection: one line, not a traceback
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    instance = stack_instance()
    # The watched folder's partitions first (the sensor's own registration), so a fresh home has runs to do.
    _register_watched_folder(instance)
    if unknown := unknown_partition_keys(defs, selection, instance, partitions):
        click.echo(f"error: unknown partition(s) {', '.join(unknown)} of {selection!r} "
                   "(`aion releases` lists the releases; keys look like 'gz1-sdss|0000')", err=True)
        sys.exit(2)
    summaries = run_selection(defs, selection, instance, partition_keys=list(partitions) or None,
                              op_config=read_op_config(config_file))
    failed = [s for s in summaries if not s.success]
    click.echo(f"{len(summaries)} run(s), {len(failed)} failed")
    sys.exit(1 if failed else 0)


def _register_watched_folder(instance):
    """Register the watched folder's partitions (retiring vanished releases) and print what a user must know:
    each broken release with its reason, each retired one. Returns the ReleaseRegistration."""
    from aion_assets.cutouts.defs import register_release_partitions

    registration = register_release_partitions(instance)
    for line in registration.report_lines():
        click.echo(line)
    return registration


def _announce_demo_partitions(instance, releases_dir) -> None:
    """The demo's first lines: each broken release with its reason, each retired one, then how many partitions
    are NEW (a rerun on the same folder says 0)."""
    registration = _register_watched_folder(instance)
    retired = f", {len(registration.retired)} retired release(s)" if registration.retired else ""
    click.echo(f"releases in {releases_dir}: {len(registration.added)} new partition(s){retired}")




# The main job is the search chain; the stellar emulator and the Galaxy Zoo study are their own groups (minutes
# to tens of minutes of training more), run with `aion materialize 'group:stellar'` / `'group:zoo'` or from the UI.
# zoo_dataset stays in: it is the split whose test objects the search heads hold out. search_queries reads
# search_log, which only searches write (none yet on a first demo). search_ablations trains the heads ~36 times
# per seed (`aion materialize search_ablations`, one to two hours on 2 cores).
DEMO_SELECTION = ("not group:stellar and (not group:zoo or key:zoo_dataset) and not key:search_queries "
                  "and not key:search_ablations")


@main.command()
@click.option("--config-file", type=click.Path(exists=True, dir_okay=False), default=None, hidden=True,
              help="YAML/JSON mapping asset name -> its run config (e.g. a tiny training set-up).")
def demo(config_file: str | None) -> None:
    """The main job on the embedded default: ingest every release, describe, embed, train, index, evaluate."""
    from aion_assets.runner import materialize as run_selection
    from aion_assets.runner import read_op_config, stack_instance

    releases_dir = get_settings().releases_dir
    if releases_dir is None:
        click.echo("no release folder: set AION_RELEASES_DIR=/path/to/releases (a folder of release folders)")
        sys.exit(2)
    instance = stack_instance()
    _announce_demo_partitions(instance, releases_dir)
    started = time.perf_counter()
    summaries = run_selection(_definitions(), DEMO_SELECTION, instance, op_config=read_op_config(config_file),
                              skip_up_to_date=True)
    failed = [s for s in summaries if not s.success]
    click.echo(f"\n{len(summaries)} run(s) in {time.perf_counter() - started:.0f} s, {len(failed)} failed")
    _print_demo_results()
    click.echo("\nOpen the UI on the same instance: make ui  (dagster dev on http://127.0.0.1:3000)")
    sys.exit(1 if failed else 0)


def _print_demo_results() -> None:
    import polars as pl

    from aion_assets.search.service import SearchService
    from aion_assets.search.targets import DEMO_QUERIES

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
            artefact = f"  artefact {row['artefact_score']:.2f}" if row.get("artefact_score") is not None else ""
            click.echo(f"  {row['rank']}  {row['score']:.3f}  {row['release']:<20} {row['object_id']}{artefact}")
    click.echo(f"\nwarehouse: {warehouse.location()}  (try: aion sql \"SELECT * FROM eval_leaderboard\")")


@main.command()
@click.option("--port", default=3000, show_default=True)
def ui(port: int) -> None:
    """Open the Dagster UI (dagster dev) on 127.0.0.1."""
    from aion_assets.platform.recovery import run_stoppable_child
    from aion_assets.runner import recover_dead_runs, stack_instance

    recover_dead_runs(stack_instance(), progress=click.echo)  # a killed CLI run must not hold a pool in the UI
    # dagster dev finds its instance through DAGSTER_HOME: the child gets the settings' folder, the one
    # `aion demo` and `aion materialize` write their runs to.
    env = subprocess_env()
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={env['DAGSTER_HOME']})")
    # Its own process group, stopped as a whole on SIGINT/SIGTERM: the webserver alone ignores SIGTERM.
    raise SystemExit(run_stoppable_child(
        [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)], env=env,
    ))
