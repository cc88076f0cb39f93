"""`raw_cutouts` through Dagster: materialize a partition, re-materialize it (no duplicates, nothing lost), a failed
run keeps the previous files, and the partitioned asset checks pass on good data and fail on a count mismatch."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from aion_assets.cutouts.assets import raw_cutouts
from aion_assets.cutouts.checks import cutouts_checks
from aion_assets.platform.lake import Lake
from aion_assets.platform.resources import platform_resources
from aion_assets.platform.warehouse import Warehouse

KEY = "gz-decals-rings|0000"


@pytest.fixture
def watched(copy_release: Callable[..., Path], aion_home, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A watched folder with a 12-object real release plus a duplicate id and a path escape."""
    folder = copy_release("gz-decals-rings", limit=12)
    catalog = pl.read_csv(folder / "catalog.csv", infer_schema_length=0)
    first = catalog.row(0, named=True)
    extra = pl.DataFrame([{**first}, {**first, "object_id": "escapee", "image": "../../etc/passwd"}],
                         schema=catalog.schema)
    pl.concat([catalog, extra]).write_csv(folder / "catalog.csv")
    monkeypatch.setenv("AION_RELEASES_DIR", str(folder.parent))
    return folder.parent


@pytest.fixture
def instance(watched: Path) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("release_shards", [KEY])
    return instance


def _materialize(instance: dg.DagsterInstance, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_cutouts, *cutouts_checks], partition_key=KEY, instance=instance, resources=platform_resources(),
        raise_on_error=raise_on_error,
    )


def _run_checks_alone(instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    """The checks without a materialization, as from the UI's "execute checks": they cover every release."""
    result = dg.materialize(
        [raw_cutouts, *cutouts_checks], instance=instance, resources=platform_resources(),
        selection=dg.AssetSelection.checks_for_assets(raw_cutouts), raise_on_error=False,
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    # Blocking checks at severity ERROR fail the run when they fail.
    assert result.success == all(e.passed for e in evaluations.values())
    return evaluations


def _shard_files(lake: Lake) -> dict[str, bytes]:
    paths = [*lake.iter_files("cutouts/gz-decals-rings/0000/*"), *lake.iter_files("tables/*/gz-decals-rings/*")]
    return {p: lake.read_bytes(p) for p in sorted(paths)}


def test_materialize_twice_replaces_exactly_the_partition(
    instance: dg.DagsterInstance, warehouse: Warehouse, lake: Lake
) -> None:
    result = _materialize(instance)
    assert result.success
    materialization = result.asset_materializations_for_node("raw_cutouts")[0]
    metadata = materialization.metadata
    assert (metadata["accepted"].value, metadata["quarantined"].value, metadata["catalog_rows"].value) == (12, 2, 14)
    assert metadata["cutouts_per_s"].value > 0
    assert "escapes the release folder" in metadata["quarantine_reasons"].value
    first_version = materialization.tags["dagster/data_version"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"cutouts_account_for_catalog": True, "cutouts_object_id_unique": True}

    def counts() -> tuple[int, int, int, int]:
        row = warehouse.query(
            "SELECT (SELECT count(*) FROM cutouts), (SELECT count(DISTINCT object_id) FROM cutouts), "
            "(SELECT count(*) FROM quarantine), (SELECT count(*) FROM labels)").row(0)
        return tuple(int(v) for v in row)

    before = counts()
    assert before[:3] == (12, 12, 2) and before[3] == 12 * 4
    again = _materialize(instance)
    assert again.success and counts() == before
    # Same source bytes: same data version, so downstream assets are not made stale by a no-op re-run.
    assert again.asset_materializations_for_node("raw_cutouts")[0].tags["dagster/data_version"] == first_version
    rgb = lake.read_array("cutouts", "gz-decals-rings", "0000", "rgb.npy")
    objects = lake.read_parquet("cutouts", "gz-decals-rings", "0000", "objects.parquet")
    assert rgb.shape == (12, 160, 160, 3) and objects["row"].to_list() == list(range(12))


def test_failed_materialization_keeps_previous_files(
    instance: dg.DagsterInstance, watched: Path, lake: Lake, warehouse: Warehouse
) -> None:
    assert _materialize(instance).success
    before = _shard_files(lake)
    catalog = watched / "gz-decals-rings" / "catalog.csv"
    pl.read_csv(catalog, infer_schema_length=0).drop("image").write_csv(catalog)  # the release breaks
    failed = _materialize(instance, raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "lacks required column(s) image" in str(failure.event_specific_data.error)
    after = _shard_files(lake)
    assert {p: b for p, b in after.items() if "_release" not in p} == before
    # ...and the broken release itself is on record in quarantine, at release level.
    rows = warehouse.query("SELECT reason FROM quarantine WHERE shard IS NULL")
    assert rows.height == 1 and "lacks required column" in rows["reason"][0]


def test_vanished_release_fails_clearly(instance: dg.DagsterInstance, watched: Path) -> None:
    import shutil

    shutil.rmtree(watched / "gz-decals-rings")
    with pytest.raises(dg.Failure, match="no folder .* holds this release"):
        _materialize(instance)


def test_count_check_fails_when_counts_mismatch(instance: dg.DagsterInstance, watched: Path) -> None:
    assert _materialize(instance).success
    with (watched / "gz-decals-rings" / "catalog.csv").open("a") as handle:
        handle.write("late_object,images/nowhere.jpg,1,1,0,0.1,0.1,0.1\n")
    evaluations = _run_checks_alone(instance)
    assert not evaluations["cutouts_account_for_catalog"].passed
    assert "12 cutouts + 2 quarantined != 15" in evaluations["cutouts_account_for_catalog"].description
    assert evaluations["cutouts_object_id_unique"].passed


def test_unique_check_fails_on_duplicates(instance: dg.DagsterInstance, lake: Lake, warehouse: Warehouse) -> None:
    assert _materialize(instance).success
    shard = warehouse.lake.read_parquet("tables", "cutouts", "gz-decals-rings", "0000.parquet")
    warehouse.write_lake_partition("cutouts", "gz-decals-rings|0001", shard.head(2).with_columns(shard=pl.lit("0001")))
    evaluations = _run_checks_alone(instance)
    assert evaluations["cutouts_account_for_catalog"].passed is False  # the stray shard has no catalog rows
    assert not evaluations["cutouts_object_id_unique"].passed
    assert evaluations["cutouts_object_id_unique"].metadata["duplicate_ids"].value == 2


def _markdown_png(markdown: str) -> Image.Image:
    """The picture inside `![title](data:image/png;base64,...)` metadata."""
    match = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:80]
    return Image.open(io.BytesIO(base64.b64decode(match.group(1))))


def test_materialization_shows_a_contact_sheet_and_the_quarantine_reasons(instance: dg.DagsterInstance) -> None:
    from aion_assets.cutouts.plots import CAPTION_PX, GAP_PX, SHEET_COLUMNS, THUMB_PX

    metadata = _materialize(instance).asset_materializations_for_node("raw_cutouts")[0].metadata
    sheet = _markdown_png(metadata["contact_sheet"].value)
    # 12 accepted cutouts: a row of 8 and a row of 4
    assert sheet.format == "PNG" and sheet.size == (SHEET_COLUMNS * (THUMB_PX + GAP_PX),
                                                    2 * (THUMB_PX + GAP_PX + CAPTION_PX))
    reasons = _markdown_png(metadata["quarantine_by_reason"].value)
    assert reasons.format == "PNG" and reasons.width > 300
    assert len(metadata["contact_sheet"].value) < 200_000  # a base64 PNG under 150 KB
