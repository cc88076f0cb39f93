"""The CLI's in-process path (`aion demo`, `aion materialize`): an asset selection run the way the UI would run
it, one run per partition, in this process.

This is the command line's path only. The UI, the schedules and the sensors go through Dagster's run queue (the
instance's run coordinator and its concurrency pools), and backfills on a cluster use Dagster's own backfills;
nothing here replaces either.

Dagster runs one partition per run, and a partitioned asset and an unpartitioned one cannot share a run, so a
selection is cut, in topological order, into stretches of assets with the same partitioning; each stretch runs
once, or once per partition key. Runs go to the instance in the settings' DAGSTER_HOME, the one `aion ui` opens,
so the UI shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from aion_assets.platform.instance import apply_pool_limits, ensure_dagster_home
from aion_assets.platform.settings import get_settings


@dataclass
class RunSummary:
    assets: list[str]
    partition_key: str | None
    success: bool
    run_id: str


def stack_instance() -> dg.DagsterInstance:
    """The instance in the settings' DAGSTER_HOME (created on first use), whether or not DAGSTER_HOME is set in
    the environment: the same folder `aion ui` hands to `dagster dev`."""
    dagster_home = get_settings().dagster_home
    ensure_dagster_home(dagster_home)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    apply_pool_limits(instance)
    return instance


def plan_runs(defs: dg.Definitions, selection: str) -> list[list[dg.AssetKey]]:
    """Selected asset keys in topological order, cut into stretches that share a partitions definition."""
    graph = defs.resolve_asset_graph()
    selected = dg.AssetSelection.from_string(selection).resolve(graph)
    if not selected:
        raise ValueError(f"selection {selection!r} matches no asset")
    ordered = [key for key in graph.toposorted_asset_keys if key in selected and graph.get(key).is_materializable]
    stretches: list[list[dg.AssetKey]] = []
    previous = object()
    for key in ordered:
        partitions_def = graph.get(key).partitions_def
        if not stretches or partitions_def != previous:
            stretches.append([])
            previous = partitions_def
        stretches[-1].append(key)
    return stretches


def materialize(
    defs: dg.Definitions,
    selection: str,
    instance: dg.DagsterInstance,
    partition_keys: Sequence[str] | None = None,
    progress: Callable[[str], None] = print,
    raise_on_error: bool = False,
    op_config: dict[str, dict] | None = None,
) -> list[RunSummary]:
    """Run the selection; ``op_config`` maps an asset name to its run config (e.g. a tiny training set-up),
    handed to whichever run executes that asset.

    A failed run does not stop the other partitions of its stretch, but nothing downstream of a failed stretch
    runs: later assets would otherwise be built from partial inputs. Earlier results stay as they were.
    """
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    summaries: list[RunSummary] = []
    for stretch in plan_runs(defs, selection):
        partitions_def = graph.get(stretch[0]).partitions_def
        names = [key.to_user_string() for key in stretch]
        ops = {name: {"config": config} for name, config in (op_config or {}).items() if name in names}
        # Dagster's per-event DEBUG lines drown the progress; assets' own INFO logs stay (AION_LOG_LEVEL).
        run_config: dict = {"loggers": {"console": {"config": {"log_level": get_settings().log_level}}}}
        if ops:
            run_config["ops"] = ops
        if partitions_def is None:
            keys: Sequence[str | None] = [None]
        else:
            keys = partition_keys or partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            if not keys:
                progress(f"skip {', '.join(names)}: no partitions yet (is a release folder configured?)")
                continue
        for index, partition_key in enumerate(keys, start=1):
            label = f" [{partition_key}] ({index}/{len(keys)})" if partition_key else ""
            progress(f"materializing {', '.join(names)}{label}")
            result = job.execute_in_process(
                instance=instance, asset_selection=stretch, partition_key=partition_key,
                raise_on_error=raise_on_error, run_config=run_config,
            )
            summaries.append(RunSummary(names, partition_key, result.success, result.run_id))
            if not result.success:
                progress(f"  failed: run {result.run_id} (its logs: the Dagster UI, or `dagster run logs`)")
        if not all(summary.success for summary in summaries):
            progress("stopping: a run failed, so the assets downstream of it were not materialized")
            break
    return summaries
