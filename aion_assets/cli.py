"""`aion`: the command line over the stack. Each domain contributes its commands from its `commands.py`."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from aion_assets.platform.settings import PROJECT_ROOT, apply_env_defaults


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """aion_assets: semantic search over astronomical image archives, as Dagster assets."""
    apply_env_defaults()


def _definitions():
    from aion_assets.definitions import defs

    return defs


@main.command()
@click.argument("selection")
@click.option("--partition", "partitions", multiple=True, help="Partition key(s); default: all known.")
def materialize(selection: str, partitions: tuple[str, ...]) -> None:
    """Materialize SELECTION (Dagster's asset selection syntax, e.g. group:cutouts or key:raw_cutouts+)."""
    from aion_assets.runner import materialize as run_selection, stack_instance

    instance = stack_instance()
    summaries = run_selection(_definitions(), selection, instance, partition_keys=list(partitions) or None)
    failed = [s for s in summaries if not s.success]
    click.echo(f"{len(summaries)} run(s), {len(failed)} failed")
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--port", default=3000, show_default=True)
def ui(port: int) -> None:
    """Open the Dagster UI (dagster dev) on 127.0.0.1."""
    from aion_assets.runner import stack_instance

    stack_instance()
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    raise SystemExit(subprocess.call(
        [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)]
    ))


def _register_domain_commands() -> None:
    import importlib

    for module_name in DOMAIN_COMMAND_MODULES:
        module = importlib.import_module(module_name)
        for command in module.commands:
            main.add_command(command)


# Each module exposes `commands: list[click.Command]` and imports its heavy dependencies inside the commands.
DOMAIN_COMMAND_MODULES: list[str] = []

_register_domain_commands()
