"""`search_log`: rows appended as lake files without the warehouse's writer lock, read through its view."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone

import polars as pl

from aion_assets.search.search_log import (
    BufferedSearchLog,
    SearchRecord,
    ensure_search_log_view,
    log_searches,
    write_records,
)

HOLD_WRITER = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); time.sleep(60)"


def _record(query: str, **changes) -> SearchRecord:
    values = dict(source="app", kind="text", query=query, k=10, release=None, model_version=1, latency_ms=12.5,
                  n_results=10)
    return SearchRecord(**{**values, **changes})


def test_rows_land_in_the_view_one_file_per_write(warehouse) -> None:
    log_searches(warehouse, [_record("a ring galaxy"), _record("a lens", release="spacewarps-cfhtls")])
    log_searches(warehouse, [_record("a ring galaxy", model_version=2, n_results=0)])
    rows = warehouse.query("SELECT query, release, model_version, n_results FROM search_log ORDER BY model_version, "
                           "query")
    assert rows.rows() == [("a lens", "spacewarps-cfhtls", 1, 10), ("a ring galaxy", None, 1, 10),
                           ("a ring galaxy", None, 2, 0)]
    assert len(warehouse.lake.glob("tables/search_log/**/*.parquet")) == 2


def test_appending_never_waits_for_a_writer_holding_the_warehouse(warehouse) -> None:
    log_searches(warehouse, [_record("first")])  # the view exists from here on
    # A run writing, in another process: while it holds the file nobody else can open it (a reader would wait).
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(warehouse.path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        warehouse.lock_timeout_s = 1.0  # opening the warehouse now would fail, not just wait
        write_records(warehouse, [_record("while a run writes")])
    finally:
        holder.kill()
        holder.wait()
    warehouse.lock_timeout_s = 60.0
    assert set(warehouse.query("SELECT query FROM search_log")["query"]) == {"first", "while a run writes"}


def test_the_buffer_writes_in_batches_and_keeps_rows_whose_write_failed(warehouse, monkeypatch) -> None:
    log = BufferedSearchLog(warehouse, flush_every_s=3600)  # flushed by hand here
    try:
        for i in range(5):
            log.record(_record(f"query {i}"))
        real_write = warehouse.lake.write_parquet
        monkeypatch.setattr(warehouse.lake, "write_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("full")))
        log.flush()
        assert log.last_error == "OSError: full"
        monkeypatch.setattr(warehouse.lake, "write_parquet", real_write)
        log.record(_record("query 5"))
    finally:
        log.close()  # writes what is pending
    assert log.last_error is None
    assert sorted(warehouse.query("SELECT query FROM search_log")["query"]) == [f"query {i}" for i in range(6)]
    assert len(warehouse.lake.glob("tables/search_log/**/*.parquet")) == 1


def test_a_busy_warehouse_delays_the_view_but_never_writes_a_row_twice(warehouse) -> None:
    log = BufferedSearchLog(warehouse, flush_every_s=3600)
    warehouse.execute("SELECT 1")  # the file exists, as it does once any run wrote
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(warehouse.path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        warehouse.lock_timeout_s = 0.5
        log.record(_record("during a run"))
        log.flush()  # the file is written; the view must wait for the run
        assert "view not made yet" in log.last_error
    finally:
        holder.kill()
        holder.wait()
    warehouse.lock_timeout_s = 60.0
    log.record(_record("after the run"))
    log.close()
    assert log.last_error is None
    assert sorted(warehouse.query("SELECT query FROM search_log")["query"]) == ["after the run", "during a run"]


def test_a_full_buffer_wakes_the_writer_before_its_interval(warehouse) -> None:
    log = BufferedSearchLog(warehouse, flush_every_s=3600, max_rows=3)
    try:
        for i in range(3):
            log.record(_record(f"q{i}"))
        deadline = time.monotonic() + 20
        while not warehouse.lake.glob("tables/search_log/**/*.parquet") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        log.close()
    assert warehouse.query("SELECT count(*) AS n FROM search_log")["n"][0] == 3


def test_an_older_native_table_is_adopted_into_the_lake_not_lost(warehouse) -> None:
    old = pl.DataFrame({"kind": ["text", "similar"], "query": ["a merger", "J1"], "k": [10, 5],
                        "release": [None, "gz1-sdss"], "results": [10, 5], "latency_ms": [20.0, 3.0],
                        "created_at": [datetime(2026, 11, 1, tzinfo=timezone.utc)] * 2},
                       schema_overrides={"release": pl.String})
    warehouse.append("search_log", old)
    ensure_search_log_view(warehouse)
    ensure_search_log_view(warehouse)  # re-running is safe
    log_searches(warehouse, [_record("new")])
    rows = warehouse.query("SELECT source, kind, query, n_results FROM search_log ORDER BY searched_at, query")
    assert rows.rows() == [("cli", "similar", "J1", 5), ("cli", "text", "a merger", 10), ("app", "text", "new", 10)]
    kind = warehouse.query("SELECT table_type FROM information_schema.tables WHERE table_name = 'search_log'")
    assert kind["table_type"][0] == "VIEW"
