"""The embedded stack: lake writes are atomic, lake tables replace exactly one partition, readers see views."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from aion_assets.platform.instance import POOL_LIMITS, apply_pool_limits, ensure_dagster_home
from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse


def test_lake_round_trips_arrays_and_tables(lake: Lake) -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    lake.write_array(array, "arrays", "a.npy")
    np.testing.assert_array_equal(lake.read_array("arrays", "a.npy"), array)
    np.testing.assert_array_equal(lake.read_array("arrays", "a.npy", mmap=True), array)
    frame = pl.DataFrame({"object_id": ["x", "y"], "value": [1.0, 2.0]})
    lake.write_parquet(frame, "t", "f.parquet")
    assert lake.read_parquet("t", "f.parquet").equals(frame)
    assert list(lake.iter_files("t/*.parquet")) == ["t/f.parquet"]


def test_lake_partition_replaces_only_its_rows(warehouse: Warehouse) -> None:
    a = pl.DataFrame({"object_id": ["a1", "a2"], "release": ["r", "r"]})
    b = pl.DataFrame({"object_id": ["b1"], "release": ["s"]})
    warehouse.write_lake_partition("things", "r|0000", a)
    warehouse.write_lake_partition("things", "s|0000", b)
    warehouse.write_lake_partition("things", "r|0000", a.head(1))  # re-materialize one partition
    rows = warehouse.query("SELECT object_id FROM things ORDER BY object_id")["object_id"].to_list()
    assert rows == ["a1", "b1"]
    warehouse.delete_lake_partition("things", "s|0000")
    warehouse.delete_lake_partition("things", "r|0000")
    assert "things" not in warehouse.tables()


def test_failed_replace_keeps_previous_rows(warehouse: Warehouse) -> None:
    warehouse.replace_rows("results", pl.DataFrame({"k": ["a"], "v": [1]}))
    with pytest.raises(Exception):
        # A frame whose column types cannot be inserted must roll back, not half-replace.
        warehouse.replace_rows("results", pl.DataFrame({"k": ["b"], "v": ["not a number"]}))
    assert warehouse.query("SELECT k, v FROM results").rows() == [("a", 1)]


def test_replacing_several_tables_is_all_or_nothing(warehouse: Warehouse) -> None:
    warehouse.replace_tables({"first": pl.DataFrame({"v": [1]}), "second": pl.DataFrame({"v": [2]})})
    with pytest.raises(Exception):  # the third statement cannot run: the first two must roll back with it
        warehouse.replace_tables({"first": pl.DataFrame({"v": [10]}), "second": pl.DataFrame({"v": [20]}),
                                  'bad"name': pl.DataFrame({"v": [30]})})
    assert warehouse.query("SELECT (SELECT v FROM first) AS a, (SELECT v FROM second) AS b").rows() == [(1, 2)]
    warehouse.replace_tables({"first": pl.DataFrame({"w": ["x", "y"]})})  # a new schema replaces the old one
    assert warehouse.query("SELECT * FROM first").columns == ["w"]


def test_bench_results_rows_carry_the_machine(warehouse: Warehouse) -> None:
    warehouse.record_bench("ingest", "cutouts_per_s", 123.4, "cutouts/s")
    row = warehouse.query("SELECT name, metric, value, unit, machine FROM bench_results").row(0)
    assert row[:4] == ("ingest", "cutouts_per_s", 123.4, "cutouts/s")
    assert "cores" in row[4]


def test_instance_has_pools(aion_home) -> None:
    import dagster as dg

    config = ensure_dagster_home(aion_home.dagster_home)
    assert "sqlite" in config.read_text()
    with dg.DagsterInstance.from_config(str(aion_home.dagster_home)) as instance:
        apply_pool_limits(instance)
        for pool, limit in POOL_LIMITS.items():
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit


def test_a_writer_waits_for_a_reader_of_the_same_process_instead_of_failing(warehouse: Warehouse) -> None:
    import threading

    warehouse.execute("CREATE TABLE t AS SELECT 1 AS x")
    with warehouse.connect(read_only=True) as reader:  # a request reading while the log thread makes a view
        threading.Timer(0.3, reader.close).start()
        warehouse.execute("INSERT INTO t VALUES (2)")  # DuckDB refuses the writer until the reader closes
    assert sorted(warehouse.query("SELECT x FROM t")["x"]) == [1, 2]
