"""The VLM response cache and batch registry in the DuckDB warehouse (the ``VlmStore`` of describers.py).

Tables (small: one row per paid answer / per batch):

- ``vlm_cache``: image_sha256, model, prompt_version, description, summary, input_tokens, output_tokens, cost_usd,
  created_at, via ('messages' | 'batch'). Content-addressed: an image is described once per (model, prompt
  version), whatever release or object id it appears under.
- ``vlm_batches``: batch_id, model, prompt_version, n_requests, status ('submitted' | 'collected' |
  'unavailable'), submitted_at, closed_at. A row is written the moment the API accepts a batch; a run that finds
  a 'submitted' batch for its model and prompt resumes it instead of sending its images again.
- ``vlm_batch_requests``: batch_id, custom_id (the image sha256 of each request in the batch).

Every write opens, writes and closes the file (the warehouse's rule); a lock serialises this process's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import asdict
from datetime import datetime, timezone

import polars as pl

from aion_assets.platform.warehouse import Warehouse, fetch_polars
from aion_assets.vlm.describers import BatchRecord, CachedAnswer

DDL = (
    """CREATE TABLE IF NOT EXISTS vlm_cache (
        image_sha256 VARCHAR, model VARCHAR, prompt_version VARCHAR, description VARCHAR, summary VARCHAR,
        input_tokens BIGINT, output_tokens BIGINT, cost_usd DOUBLE, created_at TIMESTAMPTZ, via VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS vlm_batches (
        batch_id VARCHAR, model VARCHAR, prompt_version VARCHAR, n_requests BIGINT, status VARCHAR,
        submitted_at TIMESTAMPTZ, closed_at TIMESTAMPTZ)""",
    "CREATE TABLE IF NOT EXISTS vlm_batch_requests (batch_id VARCHAR, custom_id VARCHAR)",
)


class WarehouseVlmStore:
    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self._lock = threading.RLock()
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        with self.warehouse.connect() as con:
            for statement in DDL:
                con.execute(statement)
        self._ready = True

    # Reads use a read-write connection too: DuckDB refuses two connections with different settings to one file
    # in one process, and another thread may be writing.
    def _read(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self._lock:
            self._ensure()
            with self.warehouse.connect() as con:
                return fetch_polars(con, sql, params or [])

    def cached(self, model: str, prompt_version: str, shas: Collection[str]) -> dict[str, CachedAnswer]:
        if not shas:
            return {}
        frame = self._read(
            """SELECT * EXCLUDE (rn) FROM (
                   SELECT *, row_number() OVER (PARTITION BY image_sha256 ORDER BY created_at DESC) AS rn
                   FROM vlm_cache
                   WHERE model = ? AND prompt_version = ? AND image_sha256 IN (SELECT unnest(?::VARCHAR[])))
               WHERE rn = 1""",
            [model, prompt_version, list(shas)],
        )
        return {row["image_sha256"]: CachedAnswer(**row) for row in frame.iter_rows(named=True)}

    def save_answers(self, answers: Sequence[CachedAnswer]) -> None:
        if not answers:
            return
        frame = pl.DataFrame([asdict(a) for a in answers]).with_columns(
            pl.col("created_at").dt.convert_time_zone("UTC"))
        with self._lock:
            self._ensure()
            self.warehouse.append("vlm_cache", frame)

    def record_batch(self, record: BatchRecord) -> None:
        with self._lock:
            self._ensure()
            with self.warehouse.connect() as con:
                con.execute("BEGIN")
                con.execute("INSERT INTO vlm_batches VALUES (?, ?, ?, ?, ?, ?, NULL)", [
                    record.batch_id, record.model, record.prompt_version, len(record.custom_ids), record.status,
                    record.submitted_at,
                ])
                con.execute("INSERT INTO vlm_batch_requests SELECT ?, unnest(?::VARCHAR[])",
                            [record.batch_id, list(record.custom_ids)])
                con.execute("COMMIT")

    def open_batches(self, model: str, prompt_version: str) -> list[BatchRecord]:
        frame = self._read(
            """SELECT b.batch_id, b.model, b.prompt_version, b.submitted_at, b.status,
                      list(r.custom_id ORDER BY r.custom_id) AS custom_ids
               FROM vlm_batches b JOIN vlm_batch_requests r USING (batch_id)
               WHERE b.status = 'submitted' AND b.model = ? AND b.prompt_version = ?
               GROUP BY ALL ORDER BY b.submitted_at""",
            [model, prompt_version],
        )
        return [BatchRecord(batch_id=row["batch_id"], model=row["model"], prompt_version=row["prompt_version"],
                            custom_ids=tuple(row["custom_ids"]), submitted_at=row["submitted_at"],
                            status=row["status"]) for row in frame.iter_rows(named=True)]

    def close_batch(self, batch_id: str, status: str) -> None:
        with self._lock:
            self._ensure()
            self.warehouse.execute("UPDATE vlm_batches SET status = ?, closed_at = ? WHERE batch_id = ?",
                                   [status, datetime.now(timezone.utc), batch_id])
