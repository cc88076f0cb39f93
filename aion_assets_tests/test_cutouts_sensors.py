"""The release sensor, the daily schedule, the CLI's partition registration and `aion releases`, on a watched
folder of real release subsets plus a broken one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from aion_assets.cutouts.commands import releases as releases_command
from aion_assets.cutouts.defs import build_defs, register_release_partitions
from aion_assets.cutouts.ingest import ingest_shard, write_shard
from aion_assets.cutouts.releases import load_release
from aion_assets.cutouts.sensors import daily_release_check, release_sensor
from aion_assets.platform.lake import Lake
from aion_assets.platform.resources import platform_resources
from aion_assets.platform.warehouse import Warehouse


@pytest.fixture
def watched(copy_release: Callable[..., Path], aion_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "watched"
    copy_release("gz1-sdss", limit=5, dest=root)
    copy_release("spacewarps-cfhtls", limit=2, dest=root)
    broken = copy_release("gz-decals-rings", limit=2, dest=root)
    (broken / "manifest.json").write_text('{"release": "gz-decals-rings",')  # cut short
    monkeypatch.setenv("AION_RELEASES_DIR", str(root))
    monkeypatch.setenv("AION_SHARD_SIZE", "3")
    return root


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


SENSOR_LOG = _Collect()


def _tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=platform_resources(), cursor=cursor) as context:
        context.log.addHandler(SENSOR_LOG)  # the sensor's own log, as the UI shows it
        result = release_sensor(context)
    # What the daemon does with the result: add the requested partitions.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_adds_partitions_requests_runs_and_skips_the_broken_release(
    watched: Path, warehouse: Warehouse
) -> None:
    SENSOR_LOG.lines.clear()
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(instance)
    keys = ["gz1-sdss|0000", "gz1-sdss|0001", "spacewarps-cfhtls|0000"]
    assert [r.partition_key for r in first.run_requests] == keys
    # The registration (the same function as `aion materialize`) wrote the partitions to the instance itself.
    assert not first.dynamic_partitions_requests
    assert sorted(instance.get_dynamic_partitions("release_shards")) == keys
    assert all(r.asset_selection == [dg.AssetKey("raw_cutouts")] for r in first.run_requests)
    assert len({r.run_key for r in first.run_requests}) == 3
    warnings = [line for line in SENSOR_LOG.lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and "skipping release folder 'gz-decals-rings'" in warnings[0]
    assert "manifest.json does not parse" in warnings[0]
    cursor = json.loads(first.cursor)
    assert set(cursor["releases"]) == {"gz1-sdss", "spacewarps-cfhtls"} and "gz-decals-rings" in cursor["broken"]
    rejected = warehouse.query("SELECT release, shard, reason FROM quarantine")
    assert rejected.rows() == [("gz-decals-rings", None, rejected["reason"][0])]
    assert "manifest.json does not parse" in rejected["reason"][0]

    quiet = _tick(instance, first.cursor)
    assert not quiet.run_requests and not quiet.dynamic_partitions_requests
    assert "no new or changed release" in quiet.skip_reason.skip_message
    assert "gz-decals-rings" in quiet.skip_reason.skip_message

    # A changed release gets a new run (new run key); repairing the broken one adds it and clears its row.
    with (watched / "spacewarps-cfhtls" / "catalog.csv").open("a") as handle:
        handle.write("extra,images/AT_asteroid.jpg,,,CFHTLS,artifacts,misc,0\n")
    (watched / "gz-decals-rings" / "manifest.json").write_text(json.dumps({"release": "gz-decals-rings"}))
    changed = _tick(instance, quiet.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["gz-decals-rings|0000", "spacewarps-cfhtls|0000"]
    old_run_key = next(r.run_key for r in first.run_requests if r.partition_key == "spacewarps-cfhtls|0000")
    assert old_run_key not in {r.run_key for r in changed.run_requests}
    assert "gz-decals-rings|0000" in instance.get_dynamic_partitions("release_shards")
    assert "quarantine" not in warehouse.tables()  # its only file (the release-level row) is gone


def test_sensor_without_a_watched_folder(aion_home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AION_RELEASES_DIR", "")
    result = _tick(dg.DagsterInstance.ephemeral())
    assert not result.run_requests and "AION_RELEASES_DIR" in result.skip_reason.skip_message


def test_daily_schedule_requests_what_the_lake_lacks(
    watched: Path, lake: Lake, warehouse: Warehouse, tmp_path: Path
) -> None:
    # A schedule context needs an instance it can re-open (not an ephemeral one): a real one on disk.
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        with dg.build_schedule_context(instance=instance, resources=platform_resources()) as context:
            requests = daily_release_check(context)
        assert [r.partition_key for r in requests] == ["gz1-sdss|0000", "gz1-sdss|0001", "spacewarps-cfhtls|0000"]
        assert len(instance.get_dynamic_partitions("release_shards")) == 3
        release = load_release(watched / "gz1-sdss")
        for index in range(2):
            write_shard(lake, warehouse, ingest_shard(release.path, release, index, 3))
        with dg.build_schedule_context(instance=instance, resources=platform_resources()) as context:
            requests = daily_release_check(context)
        assert [r.partition_key for r in requests] == ["spacewarps-cfhtls|0000"]


def test_register_release_partitions_for_the_cli(watched: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    registration = register_release_partitions(instance, watched)
    keys = ["gz1-sdss|0000", "gz1-sdss|0001", "spacewarps-cfhtls|0000"]
    assert registration.keys == registration.added == keys
    assert sorted(instance.get_dynamic_partitions("release_shards")) == keys
    assert any("gz-decals-rings" in line for line in registration.report_lines())
    again = register_release_partitions(instance, watched)
    assert again.keys == keys and again.added == []  # idempotent: nothing new the second time


def test_sensor_retires_a_vanished_release_with_the_cli_s_registration(watched: Path) -> None:
    """The daemon path does what `aion materialize` does: the release's partitions go, its cursor entry too
    (so a release that comes back is ingested again), one warning names it."""
    import shutil

    SENSOR_LOG.lines.clear()
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(instance)
    shutil.rmtree(watched / "spacewarps-cfhtls")
    after = _tick(instance, first.cursor)
    assert sorted(instance.get_dynamic_partitions("release_shards")) == ["gz1-sdss|0000", "gz1-sdss|0001"]
    assert "spacewarps-cfhtls" not in json.loads(after.cursor)["releases"]
    retired = [line for line in SENSOR_LOG.lines if "retired release 'spacewarps-cfhtls'" in line]
    assert len(retired) == 1 and retired[0].startswith("WARNING")


def test_releases_command_lists_ok_and_broken(watched: Path) -> None:
    runner = CliRunner()
    listing = runner.invoke(releases_command, ["--json"])
    assert listing.exit_code == 0, listing.output
    rows = {r["folder"]: r for r in json.loads(listing.output)["releases"]}
    assert rows["gz1-sdss"]["status"] == "ok" and rows["gz1-sdss"]["objects"] == 5 and rows["gz1-sdss"]["shards"] == 2
    assert rows["gz-decals-rings"]["status"] == "broken" and "does not parse" in rows["gz-decals-rings"]["reason"]
    table = runner.invoke(releases_command, [])
    assert table.exit_code == 0 and "broken: manifest.json does not parse" in table.output


def test_definitions_load(aion_home) -> None:
    defs = dg.Definitions.merge(build_defs(), dg.Definitions(resources=platform_resources()))
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("ingest_releases").partitions_def is not None
    assert defs.resolve_sensor_def("release_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("daily_release_check").cron_schedule == "0 6 * * *"


def test_first_tick_after_an_ingest_requests_nothing(aion_home, copy_release, tmp_path, monkeypatch) -> None:
    """A sensor turned on after `aion demo` starts from what the lake holds instead of ingesting it all again."""
    from aion_assets.cutouts.assets import raw_cutouts
    from aion_assets.cutouts.sensors import register_release_partitions, release_sensor
    from aion_assets.platform.resources import platform_resources

    copy_release("spacewarps-cfhtls", limit=6)
    monkeypatch.setenv("AION_RELEASES_DIR", str(tmp_path / "releases"))
    with dg.DagsterInstance.ephemeral() as instance:
        keys = register_release_partitions(instance, tmp_path / "releases").keys
        with dg.build_sensor_context(instance=instance, resources=platform_resources()) as context:
            before = release_sensor(context)
        assert [r.partition_key for r in before.run_requests] == keys  # nothing ingested yet: all requested
        for key in keys:
            assert dg.materialize([raw_cutouts], partition_key=key, instance=instance,
                                  resources=platform_resources()).success
        with dg.build_sensor_context(instance=instance, resources=platform_resources()) as context:
            after = release_sensor(context)
        assert not after.run_requests
