"""The watched folder drives ingestion: a sensor (every minute), a daily schedule, and `aion materialize` /
`aion demo` on the command line.

All of them register partitions through one function, :func:`register_release_partitions`: it adds the
partitions of every valid release and retires every release whose folder vanished (its partitions deleted from
the instance, its lake files moved under ``lake/retired/``: see cutouts/retirement.py), so the daemon's path and
the CLI's path agree on which partitions exist and which rows are served.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from aion_assets.cutouts.assets import raw_cutouts
from aion_assets.cutouts.ingest import clear_release_rejection, ingested_fingerprints, record_release_rejection
from aion_assets.cutouts.releases import ReleasePlan, plan_release_updates
from aion_assets.cutouts.retirement import RetiredRelease, releases_in_lake, retire_release_files
from aion_assets.platform.layout import ShardKey
from aion_assets.platform.partitions import release_shards
from aion_assets.platform.resources import LakeResource, ReleasesResource, WarehouseResource
from aion_assets.platform.settings import DEFAULT_SENSOR_INTERVAL_S
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


@dataclass
class ReleaseRegistration:
    """What one registration of the watched folder did."""

    releases_dir: Path | None
    plan: ReleasePlan = field(default_factory=ReleasePlan)
    added: list[str] = field(default_factory=list)  # partitions that did not exist before
    retired: list[RetiredRelease] = field(default_factory=list)
    problem: str | None = None  # why nothing was registered (no watched folder)

    @property
    def keys(self) -> list[str]:
        """Every valid release's partition keys (new or already present), sorted."""
        return self.plan.all_keys

    def report_lines(self) -> list[str]:
        """One line per thing a user must know: the missing folder, each broken release, each retired one."""
        lines = [self.problem] if self.problem else []
        lines += [f"skipping release folder {s.folder!r}: {s.reason}" for s in self.plan.skipped]
        return lines + [r.report_line(self.releases_dir) for r in self.retired]


def _keys_by_release(keys: set[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key in sorted(keys):
        try:
            grouped.setdefault(ShardKey.parse(key).release, []).append(key)
        except ValueError:
            continue  # not a shard key (added by hand): not ours to retire
    return grouped


def _retire_vanished(
    instance: dg.DagsterInstance, root: Path, plan: ReleasePlan, existing: set[str], warehouse: Warehouse
) -> list[RetiredRelease]:
    """Retire every release that has partitions or lake files but no folder any more (a broken folder counts as
    present: it waits for a repair)."""
    if not plan.releases and not plan.skipped:
        return []  # an empty watched folder is likelier an unmounted volume than every release withdrawn
    keys_by_release = _keys_by_release(existing)
    vanished = (set(keys_by_release) | releases_in_lake(warehouse.lake)) - plan.present_names
    retired: list[RetiredRelease] = []
    for release in sorted(vanished):
        keys = keys_by_release.get(release, [])
        reason = f"no folder in {root} holds release {release!r} any more"
        # Files first, partitions last: an interrupted retirement still has its partitions, so it is found and
        # finished by the next registration.
        retired.append(retire_release_files(warehouse.lake, warehouse, release, keys, reason))
        for key in keys:
            instance.delete_dynamic_partition(release_shards.name, key)
    return retired


def register_release_partitions(
    instance: dg.DagsterInstance,
    releases_dir: Path | None = None,
    warehouse: Warehouse | None = None,
    known: dict[str, str] | None = None,
) -> ReleaseRegistration:
    """The one registration of the watched folder, for the sensor, the schedule, `aion materialize` and `aion demo`.

    Adds the partitions of every valid release, retires every vanished one, and plans runs against ``known``
    (what was requested or ingested before; empty: every shard). Partitions are written straight to the
    instance, so the run requests a caller builds from ``plan.runs`` always resolve. Broken releases are left
    out and listed in ``plan.skipped``. ``releases_dir`` defaults to the settings' AION_RELEASES_DIR and
    ``warehouse`` (with its lake) to the configured stack's.
    """
    from aion_assets.platform.settings import default_releases_dir
    from aion_assets.platform.warehouse import stack_warehouse

    root = releases_dir if releases_dir is not None else default_releases_dir()
    if problem := _folder_problem(root):
        return ReleaseRegistration(root, problem=problem)
    warehouse = warehouse or stack_warehouse()
    existing = _existing_keys(instance)
    plan = plan_release_updates(root, known or {}, existing_keys=existing)
    retired = _retire_vanished(instance, root, plan, existing, warehouse)
    if plan.add_keys:
        instance.add_dynamic_partitions(release_shards.name, plan.add_keys)
    return ReleaseRegistration(root, plan, list(plan.add_keys), retired)


def _release_of(known_entry: str) -> str:
    """A sensor cursor entry is a partition key (first tick, from the lake) or a release name."""
    return ShardKey.parse(known_entry).release if ShardKey.SEPARATOR in known_entry else known_entry


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


def _release_sensor_tick(
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
    store = warehouse.get()
    registration = register_release_partitions(context.instance, root, store, known=known)
    plan = registration.plan
    for retired in registration.retired:
        context.log.warning(retired.report_line(root))
    gone = {retired.release for retired in registration.retired}
    known = {entry: fingerprint for entry, fingerprint in known.items() if _release_of(entry) not in gone}
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
        return dg.SensorResult(skip_reason=reason, cursor=cursor)
    context.log.info(f"{len(runs)} shard run(s) for release(s) {', '.join(sorted(changed))}; "
                     f"{len(registration.added)} new partition(s)")
    # The partitions are in the instance already (the registration wrote them), so no partition requests here.
    return dg.SensorResult(run_requests=runs, cursor=cursor)


def build_release_sensor(interval_s: int) -> dg.SensorDefinition:
    """The release sensor, ticking every ``interval_s`` seconds (AION_SENSOR_INTERVAL_S)."""
    return dg.sensor(
        name="release_sensor",
        job=ingest_job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Finds new or changed release folders, adds their shard partitions and requests their runs; "
                    "a broken release is skipped with its reason (here and in the quarantine table); a release "
                    "whose folder vanished is retired (partitions removed, lake files kept under lake/retired/).",
    )(_release_sensor_tick)


release_sensor = build_release_sensor(DEFAULT_SENSOR_INTERVAL_S)


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
    store = warehouse.get()
    registration = register_release_partitions(context.instance, root, store, known=ingested_fingerprints(lake.get()))
    for retired in registration.retired:
        context.log.warning(retired.report_line(root))
    _report_skipped(registration.plan, context.log, store, {})
    runs = _run_requests(registration.plan)
    if not runs:
        return dg.SkipReason("every release shard is ingested at its current content")
    return runs

