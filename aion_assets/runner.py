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

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.utils import make_new_run_id  # the id must be known before the run, to end it if interrupted

from aion_assets.platform import verbosity
from aion_assets.platform.instance import apply_pool_limits, ensure_dagster_home
from aion_assets.platform.recovery import (
    OWNER_HOST_TAG,
    InterruptWitness,
    current_owner,
    owner_from_tags,
    owner_is_alive,
    raise_keyboard_interrupt_on_sigterm,
)
from aion_assets.platform.settings import get_settings

# A run in these states still claims to be running; if its owner is gone, nobody will ever end it.
UNFINISHED_STATUSES = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                       dg.DagsterRunStatus.CANCELING]


@dataclass
class RunSummary:
    assets: list[str]
    partition_key: str | None
    success: bool
    run_id: str


def stack_instance() -> dg.DagsterInstance:
    """The instance in the settings' DAGSTER_HOME (created on first use), whether or not DAGSTER_HOME is set in
    the environment: the same folder `aion ui` hands to `dagster dev`."""
    settings = get_settings()
    ensure_dagster_home(settings.dagster_home, settings.profile)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    apply_pool_limits(instance, settings.profile)
    return instance


def recover_dead_runs(instance: dg.DagsterInstance, progress: Callable[[str], None] = print) -> list[str]:
    """Fail every unfinished CLI run whose owning process is gone and give back its pool slots; give back the
    slots any finished run still holds. Returns the run ids failed. Runs a live process owns, and runs without
    the owner tags (the UI's, the daemon's), are left alone."""
    failed: list[str] = []
    unfinished = instance.get_runs(
        filters=dg.RunsFilter(statuses=UNFINISHED_STATUSES, tags={OWNER_HOST_TAG: current_owner().host}))
    for run in unfinished:
        owner = owner_from_tags(run.tags)
        if owner is None or owner_is_alive(owner):
            continue
        instance.report_run_failed(run, message=f"run's process (pid {owner.pid} on {owner.host}) is gone: "
                                                "killed or crashed; marked failed by the next aion run")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        _end_open_tracking_runs(run.run_id)
        progress(f"run {run.run_id} was left unfinished by a killed process (pid {owner.pid}): marked failed, "
                 "its pool slots freed")
        failed.append(run.run_id)
    _free_slots_of_finished_runs(instance)
    return failed


def _end_open_tracking_runs(dagster_run_id: str) -> None:
    """MLflow runs a killed training step left RUNNING (its process had no chance to close them): KILLED."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return
        for tracked in client.search_runs(experiments, f"params.dagster_run_id = '{dagster_run_id}' "
                                                       "and attributes.status = 'RUNNING'"):
            client.set_terminated(tracked.info.run_id, status="KILLED")
    except MlflowException:  # no tracking store yet, or one that cannot be read: nothing to close
        return


def _free_slots_of_finished_runs(instance: dg.DagsterInstance) -> None:
    """A finished (or deleted) run never needs a slot again; one still held would block its pool for good."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    for run_id in storage.get_concurrency_run_ids():
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)


def _end_interrupted_run(instance: dg.DagsterInstance, run_id: str, reason: BaseException) -> None:
    """The run this process was executing when it was interrupted: failed (unless Dagster already ended it),
    its slots freed, so nothing is left held when the process exits."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, message=f"interrupted ({type(reason).__name__}): the aion process stopped")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def read_op_config(path: str | None) -> dict[str, dict] | None:
    """`--config-file`: a YAML (or JSON, which YAML reads) mapping of asset name to its run config."""
    if path is None:
        return None
    import yaml

    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict) or not all(isinstance(value, dict) for value in config.values()):
        raise ValueError(f"{path}: expected a mapping of asset name to its config")
    return config


def _was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """Whether the run failed because this process received SIGINT/SIGTERM (not because a step failed)."""
    from dagster._core.events import RunFailureReason

    failure = next((event for event in result.all_events if event.is_run_failure), None)
    data = failure.event_specific_data if failure is not None else None
    return getattr(data, "failure_reason", None) == RunFailureReason.UNEXPECTED_TERMINATION


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


def unknown_partition_keys(
    defs: dg.Definitions, selection: str, instance: dg.DagsterInstance, partition_keys: Sequence[str]
) -> list[str]:
    """The requested keys that no partitioned asset of the selection has (all of them when none is partitioned):
    checked before any run, so a typo is one line instead of a failed run's traceback."""
    graph = defs.resolve_asset_graph()
    known: set[str] = set()
    for stretch in plan_runs(defs, selection):
        partitions_def = graph.get(stretch[0]).partitions_def
        if partitions_def is not None:
            known |= set(partitions_def.get_partition_keys(dynamic_partitions_store=instance))
    return [key for key in partition_keys if key not in known]


class UpToDate:
    """Which (asset, partition) are up to date: materialized, by today's code version, from the data versions
    their parents hold now. This is the resolver behind the UI's "changed"/"outdated" badges (Dagster 1.13 has
    no public API for it; the Dagster family is pinned, and tests cover what it answers here).

    A root asset (raw_cutouts) is never up to date here: its inputs are files outside the graph, which only the
    release registration can judge, and ingesting a shard again is cheap."""

    def __init__(self, instance: dg.DagsterInstance, graph) -> None:
        from dagster._core.definitions.data_version import CachingStaleStatusResolver
        from dagster._core.loader import LoadingContext

        class _InstanceLoading(LoadingContext):
            def __init__(self) -> None:
                self._loaders: dict = {}

            @property
            def instance(self) -> dg.DagsterInstance:
                return instance

            @property
            def loaders(self) -> dict:
                return self._loaders

        self._graph = graph
        self._resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph,
                                                    loading_context=_InstanceLoading())

    def __call__(self, key: dg.AssetKey, partition: str | None) -> bool:
        from dagster._core.definitions.data_version import StaleStatus

        if not self._graph.get(key).parent_keys:
            return False
        return self._resolver.get_status(key, partition) == StaleStatus.FRESH


class _ShortFailures(logging.Filter):
    """Dagster logs a failed step's error with its stack trace on the step's failure and again on the run's;
    the command line shows the error's message once, on the step (`aion --verbose` shows the whole trace)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "RUN_FAILURE" in message:
            message = message.split("\n", 1)[0]
        record.msg, record.args = message.split("\n\nStack Trace:", 1)[0], ()
        return True


@dg.logger({"log_level": dg.Field(str, is_required=False, default_value="INFO")},
           description="The console, with one-line failures unless `aion --verbose`.")
def cli_console_logger(init_context) -> logging.Logger:
    from dagster._utils.log import create_console_logger

    console = create_console_logger("dagster", init_context.logger_config["log_level"])
    if not verbosity.verbose:
        console.addFilter(_ShortFailures())
    return console


def materialize(
    defs: dg.Definitions,
    selection: str,
    instance: dg.DagsterInstance,
    partition_keys: Sequence[str] | None = None,
    progress: Callable[[str], None] = print,
    raise_on_error: bool = False,
    op_config: dict[str, dict] | None = None,
    skip_up_to_date: bool = False,
) -> list[RunSummary]:
    """Run the selection; ``op_config`` maps an asset name to its run config (e.g. a tiny training set-up),
    handed to whichever run executes that asset.

    ``skip_up_to_date`` (what `aion demo` uses to resume after a killed run): a partition whose assets are all
    up to date (see :class:`UpToDate`) is not run again; unpartitioned assets always run.

    A failed run does not stop the other partitions of its stretch, but nothing downstream of a failed stretch
    runs: later assets would otherwise be built from partial inputs. Earlier results stay as they were.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        raise_keyboard_interrupt_on_sigterm()
    recover_dead_runs(instance, progress)
    with InterruptWitness() if on_main_thread else contextlib.nullcontext() as witness:
        return _materialize_stretches(defs, selection, instance, partition_keys, progress, raise_on_error,
                                      op_config, skip_up_to_date, witness)


def _materialize_stretches(
    defs: dg.Definitions,
    selection: str,
    instance: dg.DagsterInstance,
    partition_keys: Sequence[str] | None,
    progress: Callable[[str], None],
    raise_on_error: bool,
    op_config: dict[str, dict] | None,
    skip_up_to_date: bool,
    witness: InterruptWitness | None,
) -> list[RunSummary]:
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def().with_logger_defs({"console": cli_console_logger})
    owner_tags = current_owner().as_tags()
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
        # judged when the stretch starts: the stretches before it have run by then
        up_to_date = UpToDate(instance, graph) if skip_up_to_date and partitions_def is not None else None
        for index, partition_key in enumerate(keys, start=1):
            label = f" [{partition_key}] ({index}/{len(keys)})" if partition_key else ""
            if up_to_date is not None and all(up_to_date(key, partition_key) for key in stretch):
                progress(f"up to date: {', '.join(names)}{label}")
                continue
            progress(f"materializing {', '.join(names)}{label}")
            result = _execute_run(job, instance, witness, asset_selection=stretch, partition_key=partition_key,
                                  raise_on_error=raise_on_error, run_config=run_config, tags=owner_tags)
            summaries.append(RunSummary(names, partition_key, result.success, result.run_id))
            if not result.success:
                progress(f"  failed: run {result.run_id} (its logs: the Dagster UI, or `dagster run logs`)")
        if not all(summary.success for summary in summaries):
            progress("stopping: a run failed, so the assets downstream of it were not materialized")
            break
    return summaries


def _execute_run(job: dg.JobDefinition, instance: dg.DagsterInstance, witness: InterruptWitness | None,
                 **run_args) -> dg.ExecuteInProcessResult:
    """One run in this process. Interrupted (Ctrl-C, SIGTERM), it is never left STARTED and the CLI stops:
    KeyboardInterrupt, even where Dagster ended the run as a failure or finished it and forgot the signal."""
    run_id = make_new_run_id()
    try:
        result = job.execute_in_process(instance=instance, run_id=run_id, **run_args)
    except BaseException as error:  # Ctrl-C, SIGTERM, or raise_on_error
        _end_interrupted_run(instance, run_id, error)
        raise
    if _was_interrupted(result):
        _end_interrupted_run(instance, run_id, KeyboardInterrupt())
        raise KeyboardInterrupt
    if witness is not None and witness.received():  # the run completed; the next one must not start
        raise KeyboardInterrupt
    return result
