"""`search_log`: one row per search served (by `aion search`/`similar` or the app), as Parquet files in the lake.

Rows are appended as new files under ``tables/search_log/<day>/`` and read through the DuckDB view every lake table
has, so logging never opens the warehouse: a busy server neither takes nor waits on its single-writer lock while a
run writes. The app batches its rows (one file per flush, not per request); the CLI writes one file per command.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import polars as pl

from aion_assets.platform.warehouse import Warehouse

SEARCH_LOG = "search_log"
SCHEMA = {
    "searched_at": pl.Datetime("us", "UTC"), "source": pl.String, "kind": pl.String, "query": pl.String,
    "k": pl.Int64, "release": pl.String, "model_version": pl.Int64, "latency_ms": pl.Float64, "n_results": pl.Int64,
}


@dataclass(frozen=True)
class SearchRecord:
    source: str  # "cli" or "app"
    kind: str  # "text", "similar" or "cone"
    query: str
    k: int
    release: str | None
    model_version: int | None
    latency_ms: float
    n_results: int
    searched_at: datetime | None = None  # now, when not given


def _frame(records: list[SearchRecord]) -> pl.DataFrame:
    now = datetime.now(timezone.utc)
    rows = [{**asdict(r), "searched_at": r.searched_at or now} for r in records]
    return pl.DataFrame(rows, schema=SCHEMA)


def write_records(warehouse: Warehouse, records: list[SearchRecord]) -> str | None:
    """Append ``records`` as one new Parquet file (atomic). The file is the whole write: the view over the
    files is the caller's to make sure of (``ensure_search_log_view``), once."""
    if not records:
        return None
    now = datetime.now(timezone.utc)
    return warehouse.lake.write_parquet(
        _frame(records), "tables", SEARCH_LOG, now.strftime("%Y-%m-%d"),
        f"{now.strftime('%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet")


def log_searches(warehouse: Warehouse, records: list[SearchRecord]) -> None:
    """What a one-off command does: append the rows, and make the view if the warehouse lacks it."""
    write_records(warehouse, records)
    if SEARCH_LOG not in warehouse.tables():
        ensure_search_log_view(warehouse)


def ensure_search_log_view(warehouse: Warehouse) -> None:
    """The view over the log's files, adopting the rows of an older native `search_log` table into the lake.

    Before the app, the CLI appended to a DuckDB table (columns kind, query, k, release, results, latency_ms,
    created_at); its rows become one lake file, so the view shows the whole history.
    """
    warehouse.ensure_lake_view(SEARCH_LOG, adopt_native=_from_legacy)


def _from_legacy(legacy: pl.DataFrame) -> pl.DataFrame:
    return legacy.select(
        pl.col("created_at").dt.convert_time_zone("UTC").alias("searched_at"), pl.lit("cli").alias("source"),
        "kind", "query", "k", "release", pl.lit(None).alias("model_version"), "latency_ms",
        pl.col("results").alias("n_results"),
    ).cast(SCHEMA)


class BufferedSearchLog:
    """The app's log: rows gathered in memory and written as one file every ``flush_every_s`` seconds (or at
    ``max_rows``), by a background thread, so a request only appends to a list.

    A failed write keeps its rows for the next attempt (at most ``max_rows * 10`` are held: beyond that the
    oldest are dropped and counted in ``dropped``); a search never fails because its log could not be written.
    """

    def __init__(self, warehouse: Warehouse, flush_every_s: float = 2.0, max_rows: int = 500) -> None:
        self.warehouse = warehouse
        self.flush_every_s = flush_every_s
        self.max_rows = max_rows
        self.dropped = 0
        self.last_error: str | None = None
        self._view_ready = False
        self._pending: list[SearchRecord] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._make_view()  # before the first flush: adopts an older native search_log table
        self._thread = threading.Thread(target=self._run, name="search-log", daemon=True)
        self._thread.start()

    def record(self, record: SearchRecord) -> None:
        with self._lock:
            self._pending.append(record)
            overflow = len(self._pending) - self.max_rows * 10
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped += overflow
            if len(self._pending) >= self.max_rows:
                self._wake.set()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            write_records(self.warehouse, batch)
            self.last_error = None
        except Exception as error:  # noqa: BLE001 - kept for the next flush; the server goes on serving
            self.last_error = f"{type(error).__name__}: {error}"
            with self._lock:
                self._pending[:0] = batch
            return
        if batch and not self._view_ready:
            self._make_view()

    def _make_view(self) -> None:
        """The view over the files (made at start, and at a flush until it succeeds): a busy warehouse is tried
        again at the next flush (the rows are safe in their files meanwhile, never written twice). The view
        needs files to read: until the first, the start's attempt drops any stale view and is retried."""
        try:
            ensure_search_log_view(self.warehouse)
            self._view_ready = bool(self.warehouse.lake.glob(f"tables/{SEARCH_LOG}/**/*.parquet"))
        except Exception as error:  # noqa: BLE001 - retried at the next flush
            self.last_error = f"search_log view not made yet: {type(error).__name__}: {error}"

    def close(self) -> None:
        """Stop the thread and write what is pending (the server's shutdown)."""
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if not self._stopped.is_set():
                self.flush()
