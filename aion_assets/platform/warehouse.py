"""The warehouse: one DuckDB file whose tables and views are what users query.

DuckDB allows one writing process per file, and while it writes no other process can open it. So every write
holds the file only for the moment of the write (open, write, close), readers retry briefly on a lock instead of
failing, and heavy per-partition tables live as Parquet in the lake with a view over them: ingesting a partition
writes one file and never takes the DuckDB lock.

On a cluster many pods write at once, which one file cannot take: with a DuckLake catalog (``AION_DUCKLAKE_CATALOG``,
a PostgreSQL database) the same tables and views live in DuckLake, its data files in the lake under
``warehouse/``. Every connection is then an in-memory DuckDB with the lake attached; writers never wait on a
file lock (DuckLake commits through the catalog, and a transaction that lost a race is retried here).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey

if TYPE_CHECKING:  # polars is imported where frames are made: `aion sql` answers without it
    import polars as pl

    from aion_assets.platform.settings import AionSettings

# The last: within one process, a writer's connection cannot open while a reader's is open (or the reverse), as
# when a server's log thread makes a view while a request reads; it clears as soon as the other closes.
LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked", "lock on file",
                "different configuration than existing connections")
# A DuckLake commit that lost a race with another writer's (same table, same snapshot) fails with one of these;
# the unit of work is run again on a fresh snapshot.
# DuckLake refuses, for example, an insert into a table another transaction deleted from since this one began:
# replacing rows (delete, then insert) conflicts with any concurrent write to the same table.
CONFLICT_MARKER = "conflict"  # matched case-insensitively
CONFLICT_RETRIES = 20
DUCKLAKE_ALIAS = "warehouse"
# One small table of facts about the warehouse itself: ``lake_root`` is the lake its views were built over.
META_TABLE = "aion_meta"
LAKE_ROOT_KEY = "lake_root"


def partition_path(table: str, partition_key: str | ShardKey | None) -> tuple[str, ...]:
    """Lake path of one partition of a lake table: ``gz1-sdss|0003`` -> tables/<t>/gz1-sdss/0003.parquet."""
    if partition_key is None:
        return ("tables", table, "all.parquet")
    key = ShardKey.parse(partition_key)
    return ("tables", table, key.release, f"{key.shard}.parquet")


def fetch_polars(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
    """Run one statement and return its rows as a Polars frame, through Arrow (DuckDB 2 has no `.pl()` on
    results); a statement that returns no relation gives an empty frame."""
    import polars as pl

    relation = con.sql(sql, params=list(params) if params else None)
    if relation is None:
        return pl.DataFrame()
    frame = pl.from_arrow(relation.to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def machine_label() -> str:
    """Where a benchmark ran: host, CPU count and accelerator, so rows from different machines never mix."""
    accelerator = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            accelerator = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return f"{platform.node()}|{os.cpu_count()} cores|{accelerator}"


def _add_new_columns(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Columns the incoming rows have and the table lacks are added (NULL for the older rows): a table users
    already have keeps its history when a later version writes more (e.g. ``pool`` in ``eval_results``)."""
    existing = {row[0] for row in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND table_name = ?",
        [table]).fetchall()}
    for name, dtype in con.execute("SELECT column_name, column_type FROM (DESCRIBE incoming)").fetchall():
        if name not in existing:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {dtype}')


# -- relocation: the views name the lake by its absolute path ----------------------------------------------------
# DuckDB stores a view's SQL as written and resolves a relative path against the process's working directory,
# not the database file; so a view names its lake absolutely, and a warehouse copied or moved with its AION_HOME
# would go on reading the old lake (or fail once it is gone). Each Warehouse object therefore compares, on its
# first connection, the lake its views were built over (``aion_meta``) with its own, and rebuilds them if they
# differ: one small query per object, a rebuild only after a move.
def _record_lake_root(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    # No primary key (DuckLake has none): a delete and an insert, inside the caller's transaction when it has one.
    con.execute(f'CREATE TABLE IF NOT EXISTS "{META_TABLE}" (key VARCHAR, value VARCHAR)')
    con.execute(f'DELETE FROM "{META_TABLE}" WHERE key = ?', [LAKE_ROOT_KEY])
    con.execute(f'INSERT INTO "{META_TABLE}" VALUES (?, ?)', [LAKE_ROOT_KEY, lake.url()])


def _recorded_lake_root(con: duckdb.DuckDBPyConnection) -> str | None:
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND table_name = ?", [META_TABLE]).fetchall()[0][0]
    if not has_meta:
        return None
    # fetchall, not fetchone: a half-read result keeps the connection busy for the caller's next statement
    rows = con.execute(f'SELECT value FROM "{META_TABLE}" WHERE key = ?', [LAKE_ROOT_KEY]).fetchall()
    return rows[0][0] if rows else None


def _lake_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the views over lake tables: their SQL reads ``.../tables/<name>/**/*.parquet``."""
    rows = con.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND database_name = current_database() "
        "AND schema_name = 'main'").fetchall()
    return [name for name, sql in rows if f"/tables/{name}/**/*.parquet" in (sql or "")]


def _views_over_another_lake(con: duckdb.DuckDBPyConnection, lake: Lake) -> list[str]:
    """The lake views to rebuild: all of them when they were built over another lake root (or over one not
    recorded, as warehouses written before ``aion_meta`` existed), else none."""
    if _recorded_lake_root(con) == lake.url():
        return []
    return _lake_views(con)


def stack_lake(settings: AionSettings | None = None) -> Lake:
    """The configured stack's lake, from the same settings the resources read."""
    from aion_assets.platform.settings import get_settings

    settings = settings or get_settings()
    return Lake(settings.lake_root, store=settings.object_store())


def stack_warehouse(settings: AionSettings | None = None, lock_timeout_s: float = 60.0) -> Warehouse:
    """The configured stack's warehouse (its lake at ``.lake``), from the same settings the resources read."""
    from aion_assets.platform.settings import get_settings

    settings = settings or get_settings()
    return Warehouse(settings.warehouse_path, stack_lake(settings), lock_timeout_s=lock_timeout_s,
                     ducklake_catalog=settings.ducklake_catalog)


class Warehouse:
    def __init__(self, path: str | Path, lake: Lake, lock_timeout_s: float = 60.0,
                 ducklake_catalog: str | None = None) -> None:
        self.path = Path(path)
        self.lake = lake
        self.lock_timeout_s = lock_timeout_s
        self.ducklake_catalog = ducklake_catalog or None
        # Whether this object has made sure the lake views read this lake (once: see _follow_the_lake).
        self._lake_views_checked = False
        self._ducklake: duckdb.DuckDBPyConnection | None = None
        self._ducklake_lock = threading.Lock()  # the app's threads share one Warehouse
        self._views_seen = False

    @property
    def is_ducklake(self) -> bool:
        return self.ducklake_catalog is not None

    def location(self) -> str:
        """What the warehouse is, for people: the DuckDB file, or the DuckLake catalog and data path."""
        if self.is_ducklake:
            return f"DuckLake (catalog: PostgreSQL {self.ducklake_catalog}; data: {self.lake.url('warehouse')})"
        return str(self.path)

    # -- connections -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse for one unit of work: the file, retrying while another process holds its lock, or
        a cursor on this object's DuckLake connection."""
        if self.is_ducklake:
            cursor = self._ducklake_connection().cursor()
            try:
                cursor.execute(f"USE {DUCKLAKE_ALIAS}")
                yield cursor
            finally:
                cursor.close()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if read_only and not self.path.exists():
            # A read-only open of a missing file fails; create it empty so first readers see "no tables".
            with self.connect(read_only=False):
                pass
        connection = self._open(read_only)
        if not self._lake_views_checked:
            self._lake_views_checked = True
            stale = _views_over_another_lake(connection, self.lake)
            if stale and read_only:
                connection.close()  # one process cannot hold the file read-only and writable at once
                with self.connect() as writer:
                    self._rebuild_lake_views(writer, stale)
                connection = self._open(read_only)
            elif stale:
                self._rebuild_lake_views(connection, stale)
        try:
            yield connection
        finally:
            connection.close()

    def _ducklake_connection(self) -> duckdb.DuckDBPyConnection:
        """One in-memory DuckDB per Warehouse object with the DuckLake attached (its catalog in PostgreSQL):
        attaching costs a catalog round trip, so each unit of work takes a cursor on it instead. A DuckLake
        transaction reads the newest snapshot when it starts, so a long-lived connection still sees other
        writers' commits."""
        with self._ducklake_lock:
            if self._ducklake is None:
                self._ducklake = self._attach_ducklake()
        return self._ducklake

    def _attach_ducklake(self) -> duckdb.DuckDBPyConnection:
        """Attach, retrying when the first attach of a new catalog raced another process's (both try to create
        DuckLake's metadata tables; the loser finds them made on its next try)."""
        for attempt in range(6):
            try:
                return self._attach_ducklake_once()
            except duckdb.Error as error:
                if "Failed to initialize DuckLake" not in str(error) or attempt == 5:
                    raise
                time.sleep(0.2 * (1 + random.random()))
        raise AssertionError("unreachable")

    def _attach_ducklake_once(self) -> duckdb.DuckDBPyConnection:
        from aion_assets.platform.duckdb_extensions import connection_config, load_extensions

        con = duckdb.connect(config=connection_config())
        try:
            load_extensions(con)
            if not self.lake.is_local:
                con.execute(self.lake.store.duckdb_secret_sql())
            data_path = (self.lake.url("warehouse").rstrip("/") + "/").replace("'", "''")
            catalog = self.ducklake_catalog.replace("'", "''")
            con.execute(f"ATTACH 'ducklake:postgres:{catalog}' AS {DUCKLAKE_ALIAS} (DATA_PATH '{data_path}')")
        except BaseException:
            con.close()
            raise
        return con

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                if not self.lake.is_local:  # views over s3:// Parquet need httpfs and the store's secret
                    return self._open_over_object_store(read_only)
                return duckdb.connect(str(self.path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                if not any(marker in str(error) for marker in LOCK_MARKERS) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def _open_over_object_store(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        from aion_assets.platform.duckdb_extensions import connection_config, load_extensions

        con = duckdb.connect(str(self.path), read_only=read_only, config=connection_config())
        load_extensions(con, ("httpfs",))
        con.execute(self.lake.store.duckdb_secret_sql())  # a DuckDB secret is temporary unless PERSISTENT
        return con

    def _transaction(self, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        """Run ``work`` in one transaction and return what it returns. On DuckLake a commit that lost a race
        with another writer is retried on a fresh snapshot, up to 20 times with a jittered back-off (at most
        2 s); the file's writers cannot race (one writing process at a time)."""
        attempts = CONFLICT_RETRIES if self.is_ducklake else 1
        for attempt in range(attempts):
            with self.connect() as con:
                con.execute("BEGIN")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                    return result
                except Exception as error:
                    with contextlib.suppress(Exception):
                        con.execute("ROLLBACK")
                    if attempt + 1 == attempts or CONFLICT_MARKER not in str(error).lower():
                        raise
            time.sleep(min(0.05 * 2 ** attempt, 2.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a read-only query and return a Polars frame."""
        with self.connect(read_only=True) as con:
            return fetch_polars(con, sql, params)

    def query_rows(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """A read-only query's column names and rows as Python values, without polars (what `aion sql` prints)."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(sql, list(params) if params else [])
            columns = [column[0] for column in cursor.description or []]
            return columns, cursor.fetchall() if columns else []

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, params or [])

    def tables(self) -> set[str]:
        if not self.is_ducklake and not self.path.exists():
            return set()
        frame = self.query("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                           "AND table_schema = 'main'")
        return set(frame["table_name"].to_list())

    # -- native tables (small, written by one asset at a time) -------------------------------------------------
    def replace_rows(self, table: str, frame: pl.DataFrame, where: str | None = None,
                     params: Sequence[Any] | None = None) -> None:
        """Replace exactly the rows matching ``where`` (all rows when None) with ``frame``, in one transaction."""
        incoming = frame.to_arrow()

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("incoming", incoming)
            con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM incoming LIMIT 0')
            _add_new_columns(con, table)
            con.execute(f'DELETE FROM "{table}"' + (f" WHERE {where}" if where else ""), params or [])
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM incoming')

        self._transaction(work)

    def replace_tables(self, frames: dict[str, pl.DataFrame]) -> None:
        """Replace whole tables with ``frames`` in one transaction: readers see all the old ones or all the new."""
        incoming = [frame.to_arrow() for frame in frames.values()]

        def work(con: duckdb.DuckDBPyConnection) -> None:
            for index, (table, arrow) in enumerate(zip(frames, incoming)):
                con.register(f"incoming_{index}", arrow)
                con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM incoming_{index}')

        self._transaction(work)

    def append(self, table: str, frame: pl.DataFrame) -> None:
        self.replace_rows(table, frame, where="FALSE")

    def create_table_as(self, table: str, select_sql: str) -> int:
        """Materialize a SELECT as a table, atomically replacing the previous version; returns its row count."""
        def work(con: duckdb.DuckDBPyConnection) -> int:
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS {select_sql}')
            return int(con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])

        return self._transaction(work)

    # -- lake tables (heavy, one Parquet file per partition, a view in DuckDB) ---------------------------------
    def write_lake_partition(self, table: str, partition_key: str | None, frame: pl.DataFrame) -> str:
        """Replace one partition's rows of a lake table: one atomic file write.

        The view's glob picks up new files by itself, so DuckDB is opened only when the table gets its first
        file (or the warehouse file is new): ingesting shard after shard never waits on, or blocks, a reader.
        """
        needs_view = not self._has_partitions(table) or self._lacks_views()
        written = self.lake.write_parquet(frame, *partition_path(table, partition_key))
        if needs_view:
            self.ensure_lake_view(table)
        return written

    def delete_lake_partition(self, table: str, partition_key: str | None) -> None:
        self.lake.delete(*partition_path(table, partition_key))
        if not self._has_partitions(table):
            self.ensure_lake_view(table)  # the last file is gone: drop the view, which would fail to read

    def _lacks_views(self) -> bool:
        """A new warehouse over a lake that already has files: a new DuckDB file, or a DuckLake catalog without
        our views yet (``aion_meta`` is written with the first one)."""
        if self.is_ducklake:
            # once seen, the catalog keeps them: one catalog query per Warehouse object, not one per write
            self._views_seen = self._views_seen or META_TABLE in self.tables()
            return not self._views_seen
        return not self.path.exists()

    def _has_partitions(self, table: str) -> bool:
        return bool(self.lake.glob(f"tables/{table}/**/*.parquet"))

    def read_lake_table(self, table: str) -> pl.DataFrame:
        import polars as pl

        frames = [self.lake.read_parquet(rel) for rel in self.lake.iter_files(f"tables/{table}/**/*.parquet")]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def ensure_lake_view(self, table: str,
                         adopt_native: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> None:
        """A view over every partition file of a lake table; new files appear in it without touching DuckDB.

        With ``adopt_native``, a native DuckDB table of that name (what an older version wrote) is first moved
        into the lake: its rows, converted by ``adopt_native``, become one file (a fixed name, so a retry after a
        failure rewrites rather than duplicates it), then the table is dropped. Nothing is lost to the view.
        """
        def work(con: duckdb.DuckDBPyConnection) -> None:
            native = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = "
                                 "current_database() AND table_schema = 'main' AND table_name = ? "
                                 "AND table_type = 'BASE TABLE'", [table]).fetchall()[0][0]
            if native and adopt_native is not None:
                rows = fetch_polars(con, f'SELECT * FROM "{table}"')
                if rows.height:
                    self.lake.write_parquet(adopt_native(rows), "tables", table, "adopted", "native-table.parquet")
                con.execute(f'DROP TABLE "{table}"')
            self._write_lake_view(con, table)

        self._transaction(work)

    def _write_lake_view(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        if self._has_partitions(table):
            pattern = self.lake.url("tables", table, "**", "*.parquet").replace("'", "''")
            con.execute(
                f'CREATE OR REPLACE VIEW "{table}" AS '
                f"SELECT * FROM read_parquet('{pattern}', union_by_name = true)"
            )
        else:
            con.execute(f'DROP VIEW IF EXISTS "{table}"')
        _record_lake_root(con, self.lake)

    def close(self) -> None:
        """Close this object's DuckLake connection (a file warehouse holds none between units of work)."""
        if self._ducklake is not None:
            self._ducklake.close()
            self._ducklake = None

    def _rebuild_lake_views(self, con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> None:
        """Rebuild the views over this lake (a view whose table this lake lacks is dropped), in one transaction."""
        con.execute("BEGIN")
        try:
            for table in tables:
                self._write_lake_view(con, table)
            _record_lake_root(con, self.lake)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    # -- benchmarks --------------------------------------------------------------------------------------------
    def record_bench(self, name: str, metric: str, value: float, unit: str) -> None:
        """One row in ``bench_results``: every `aion bench` writes here."""
        import polars as pl

        self.append("bench_results", pl.DataFrame({
            "name": [name], "metric": [metric], "value": [float(value)], "unit": [unit],
            "machine": [machine_label()], "created_at": [datetime.now(timezone.utc)],
        }))
