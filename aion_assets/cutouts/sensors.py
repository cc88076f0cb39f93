"""The watched folder drives ingestion: a sensor (every minute), a daily schedule, and a helper for the CLI.

All three plan through :func:`aion_assets.cutouts.releases.plan_release_updates`, so they agree on partitions.
"""

import json
from collections.abc import Callable

import dagster as dg

from aion_assets.cutouts.assets import raw_cutouts
from aion_assets.cutouts.ingest import clear_release_rejection, ingested_fingerprints, record_release_rejection
from aion_assets.cutouts.releases import ReleasePlan, plan_release_updates
from aion_assets.platform.layout import ShardKey
from aion_assets.platform.partitions import release_shards
from aion_assets.platform.resources import LakeResource, ReleasesResource, WarehouseResource
from aion_assets.platform.warehouse import Warehouse

ingest_job = dg.define_asset_job(
    "ingest_releases",
    selection=[raw_cutouts],  # partitioned by release_shards, inferred from the asset
    description="Ingest one release shard into the lake (raw_cutouts and its checks).",
)

NO_FOLDER = "no watched folder configured: set AION_RELEASES_DIR to a folder of survey releases"


def _folder_problem(root) -> str | None:
    """Why there is nothing to watch, or None when the folder is there."""
    if root is None:
        return NO_FOLDER
    return None if root.is_dir() else f"watched folder {root} does not exist"


def _run_requests(plan: ReleasePlan) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(
            partition_key=run.partition_key,
            run_key=run.run_key,
            asset_selection=[raw_cutouts.key],
            tags={"aion/release_fingerprint": run.fingerprint},
        )
        for run in plan.runs
    ]


def _existing_keys(instance: dg.DagsterInstance) -> set[str]:
    return set(instance.get_dynamic_partitions(release_shards.name))


def _report_skipped(plan: ReleasePlan, log, warehouse: Warehouse | None, already: dict[str, str]) -> dict[str, str]:
    """Warn about every broken release; write its quarantine row only when its reason is new (no lock per tick)."""
    broken: dict[str, str] = {}
    for skipped in plan.skipped:
        log.warning(f"skipping release folder {skipped.folder!r}: {skipped.reason}")
        broken[skipped.folder] = skipped.reason
        if warehouse is not None and already.get(skipped.folder) != skipped.reason:
            try:
                record_release_rejection(warehouse, skipped.folder, skipped.folder, skipped.reason)
            except Exception as error:  # the sensor's job is planning: a busy warehouse must not stop it
                log.warning(f"could not record the rejection of {skipped.folder!r} in quarantine: {error}")
    return broken


@dg.sensor(
    name="release_sensor",
    job=ingest_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Finds new or changed release folders, adds their shard partitions and requests their runs; "
                "a broken release is skipped with its reason (here and in the quarantine table).",
)
def release_sensor(
    context: dg.SensorEvaluationContext, releases: ReleasesResource, warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.SensorResult:
    root = releases.root()
    if problem := _folder_problem(root):
        return dg.SensorResult(skip_reason=problem)
    state = json.loads(context.cursor) if context.cursor else {}
    # First tick: start from what the lake already holds (e.g. after `aion demo`), so a sensor switched on
    # later does not ingest every release again.
    known: dict[str, str] = state["releases"] if "releases" in state else ingested_fingerprints(lake.get())
    plan = plan_release_updates(root, known, existing_keys=_existing_keys(context.instance))
    store = warehouse.get()
    broken = _report_skipped(plan, context.log, store, state.get("broken", {}))
    changed = {ShardKey.parse(run.partition_key).release for run in plan.runs}
    # A repaired release: drop its release-level quarantine row (recorded under the folder name while broken).
    repaired = {r.path.name for r in plan.releases if r.path.name in state.get("broken", {})}
    for name in changed | repaired:
        clear_release_rejection(store, name)
    cursor = json.dumps({
        "releases": {**known, **{r.name: r.fingerprint for r in plan.releases}},
        "broken": broken,
    }, sort_keys=True)
    runs = _run_requests(plan)
    skipped_note = "; ".join(f"{s.folder}: {s.reason}" for s in plan.skipped)
    if not runs:
        reason = "no new or changed release" + (f" (skipped broken: {skipped_note})" if skipped_note else "")
        return dg.SensorResult(
            skip_reason=reason,
            cursor=cursor,
            dynamic_partitions_requests=[release_shards.build_add_request(plan.add_keys)] if plan.add_keys else None,
        )
    context.log.info(f"{len(runs)} shard run(s) for release(s) {', '.join(sorted(changed))}; "
                     f"{len(plan.add_keys)} new partition(s)")
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[release_shards.build_add_request(plan.add_keys)] if plan.add_keys else [],
        cursor=cursor,
    )


@dg.schedule(
    name="daily_release_check",
    cron_schedule="0 6 * * *",
    job=ingest_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily re-check of the watched folder: runs every shard that is not ingested at its current "
                "content (new releases, changed ones, and runs that failed since).",
)
def daily_release_check(
    context: dg.ScheduleEvaluationContext, releases: ReleasesResource, lake: LakeResource,
    warehouse: WarehouseResource,
):
    root = releases.root()
    if problem := _folder_problem(root):
        return dg.SkipReason(problem)
    # What the lake holds (completion markers), not what was requested: a failed run is retried here.
    plan = plan_release_updates(root, ingested_fingerprints(lake.get()), existing_keys=_existing_keys(context.instance))
    _report_skipped(plan, context.log, warehouse.get(), {})
    if plan.add_keys:
        # Schedules cannot carry partition requests; add them directly so the run requests resolve.
        context.instance.add_dynamic_partitions(release_shards.name, plan.add_keys)
    runs = _run_requests(plan)
    if not runs:
        return dg.SkipReason("every release shard is ingested at its current content")
    return runs


def register_release_partitions(
    instance: dg.DagsterInstance, releases_dir=None, log: Callable[[str], None] | None = None
) -> list[str]:
    """Add the partitions of every valid release in the watched folder (for `aion demo`, no daemon needed).

    Returns every valid release's partition keys (new or already present), sorted; broken releases are
    reported through ``log`` and left out.
    """
    from aion_assets.platform.settings import default_releases_dir

    root = releases_dir if releases_dir is not None else default_releases_dir()
    if root is None:
        if log:
            log(NO_FOLDER)
        return []
    plan = plan_release_updates(root, {}, existing_keys=_existing_keys(instance))
    for skipped in plan.skipped:
        if log:
            log(f"skipping release folder {skipped.folder!r}: {skipped.reason}")
    if plan.add_keys:
        instance.add_dynamic_partitions(release_shards.name, plan.add_keys)
    return plan.all_keys
