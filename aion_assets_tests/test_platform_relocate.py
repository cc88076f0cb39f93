"""An AION_HOME can be copied or moved: the copy reads its own lake and writes runs into its own storage.

DuckDB views and Dagster's sqlite storage both name folders absolutely; the warehouse rebuilds its lake views
when they were built over another lake root, and ensure_dagster_home points the dagster.yaml it wrote at the
home it is in. Each test builds a real stack (lake partitions, a view, a Dagster run), copies the folder, and
works in the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from aion_assets.platform.instance import WRITTEN_BY, ensure_dagster_home
from aion_assets.platform.lake import Lake
from aion_assets.platform.settings import get_settings
from aion_assets.platform.warehouse import META_TABLE, Warehouse


@dg.asset
def tiny_asset() -> int:
    return 1


def _stack_warehouse() -> Warehouse:
    settings = get_settings()
    return Warehouse(settings.warehouse_path, Lake(settings.lake_root))


def _materialize_once() -> str:
    """One real run on the settings' instance, as ``aion materialize`` opens it; returns its run id."""
    dagster_home = get_settings().dagster_home
    ensure_dagster_home(dagster_home)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = dg.materialize([tiny_asset], instance=instance)
        assert result.success
        return result.run_id


def _run_ids(dagster_home: Path) -> set[str]:
    ensure_dagster_home(dagster_home)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return {run.run_id for run in instance.get_runs()}


def _view_sql(warehouse_path: Path, view: str) -> str:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [view]).fetchone()[0]


def _build_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AION_HOME", str(home))
    warehouse = _stack_warehouse()
    warehouse.write_lake_partition("cutouts", "rel-a|0000", pl.DataFrame({"object_id": ["a0", "a1"]}))
    warehouse.write_lake_partition("cutouts", "rel-a|0001", pl.DataFrame({"object_id": ["a2"]}))
    warehouse.append("results", pl.DataFrame({"k": ["native"]}))
    return _materialize_once()


@pytest.fixture
def original_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("AION_PROFILE", "DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI",
                     "AION_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "original"


def test_a_copied_home_reads_its_own_lake_while_the_original_lives_on(
        tmp_path: Path, original_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _build_home(original_home, monkeypatch)
    copy = tmp_path / "copy"
    shutil.copytree(original_home, copy)
    # The original keeps growing after the copy: none of it may show through the copy's view.
    Warehouse(original_home / "warehouse.duckdb", Lake(str(original_home / "lake"))).write_lake_partition(
        "cutouts", "rel-b|0000", pl.DataFrame({"object_id": ["only-in-original"]}))

    monkeypatch.setenv("AION_HOME", str(copy))
    warehouse = _stack_warehouse()
    assert sorted(warehouse.query("SELECT object_id FROM cutouts")["object_id"]) == ["a0", "a1", "a2"]
    assert str(copy / "lake" / "tables" / "cutouts") in _view_sql(copy / "warehouse.duckdb", "cutouts")
    assert warehouse.query(f"SELECT value FROM {META_TABLE}").item() == str(copy / "lake")
    # New partitions of the copy show through the rebuilt view without touching DuckDB (the glob is the copy's).
    Lake(str(copy / "lake")).write_parquet(pl.DataFrame({"object_id": ["c0"]}), "tables", "cutouts", "rel-c",
                                           "0000.parquet")
    assert "c0" in warehouse.query("SELECT object_id FROM cutouts")["object_id"].to_list()
    assert warehouse.query("SELECT k FROM results").rows() == [("native",)]


def test_a_moved_home_keeps_its_views_and_runs_and_writes_new_runs_into_itself(
        tmp_path: Path, original_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_run = _build_home(original_home, monkeypatch)
    copy = tmp_path / "moved"
    shutil.copytree(original_home, copy)
    gone = original_home.rename(tmp_path / "gone")  # the old paths no longer exist
    runs_in_gone = _run_ids_without_rewrite(gone)

    monkeypatch.setenv("AION_HOME", str(copy))
    # A read-only first contact (`aion sql`) rebuilds the views too: it briefly takes the write lock to do so.
    assert _stack_warehouse().query("SELECT count(*) AS n FROM cutouts").item() == 3
    config = (copy / "dagster" / "dagster.yaml").read_text()
    assert str(original_home) not in _storage_line(ensure_dagster_home(copy / "dagster").read_text())
    assert config.startswith(WRITTEN_BY)
    assert _run_ids(copy / "dagster") == {first_run}  # the old run, seen from the copy
    second_run = _materialize_once()
    assert _run_ids(copy / "dagster") == {first_run, second_run}
    assert _run_ids_without_rewrite(gone) == runs_in_gone == {first_run}  # nothing was written to the old place
    assert not original_home.exists()  # and nothing recreated it


def _storage_line(config_text: str) -> str:
    return next(line for line in config_text.splitlines() if "base_dir" in line)


def _run_ids_without_rewrite(home: Path) -> set[str]:
    """Runs in the sqlite storage of a home, read straight from its runs.db (no dagster.yaml involved)."""
    import sqlite3

    with sqlite3.connect(home / "dagster" / "storage" / "history" / "runs.db") as con:
        return {row[0] for row in con.execute("SELECT run_id FROM runs")}


def test_a_users_own_dagster_yaml_is_never_rewritten(tmp_path: Path) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    own = "storage:\n  sqlite:\n    base_dir: /somewhere/else\n"
    (home / "dagster.yaml").write_text(own)
    ensure_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == own


def test_ensure_dagster_home_rewrites_only_the_storage_line(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "dagster", tmp_path / "new" / "dagster"
    ensure_dagster_home(old)
    added = (old / "dagster.yaml").read_text() + "run_monitoring:\n  enabled: true\n"  # lines others add
    new.mkdir(parents=True)
    (new / "dagster.yaml").write_text(added)
    ensure_dagster_home(new)
    rewritten = (new / "dagster.yaml").read_text()
    assert rewritten == added.replace(str(old / "storage"), str(new / "storage"))
    assert ensure_dagster_home(new).read_text() == rewritten  # once pointed home, left alone


def test_an_older_warehouse_without_meta_has_its_views_rebuilt(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    warehouse.write_lake_partition("labels", None, pl.DataFrame({"name": ["ring"]}))
    warehouse.execute(f"DROP TABLE {META_TABLE}")  # as written before aion_meta existed
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "lake", moved / "lake")
    shutil.copy(tmp_path / "warehouse.duckdb", moved / "warehouse.duckdb")
    shutil.rmtree(tmp_path / "lake")
    relocated = Warehouse(moved / "warehouse.duckdb", Lake(str(moved / "lake")))
    assert relocated.query("SELECT name FROM labels").rows() == [("ring",)]
    assert relocated.query(f"SELECT value FROM {META_TABLE}").item() == str(moved / "lake")
