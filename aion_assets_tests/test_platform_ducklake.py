"""The warehouse as DuckLake (the cluster profile's): catalog in a real PostgreSQL, data files and lake tables in a
real S3 server (moto). Many processes write at once, which one DuckDB file cannot take; users still read it with
DuckDB and `aion sql`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse
from aion_assets_tests.cluster_services import S3, Postgres, postgres_server, s3_server

BUCKET = "aion-ducklake"
WRITES_PER_PROCESS = 6

WRITER = textwrap.dedent("""
    import sys
    import polars as pl
    from aion_assets.platform.lake import Lake, ObjectStore
    from aion_assets.platform.warehouse import Warehouse

    who, root, catalog, endpoint, writes = sys.argv[1:6]
    lake = Lake(root, store=ObjectStore(endpoint_url=endpoint, access_key_id="testing",
                                        secret_access_key="testing"))
    warehouse = Warehouse("unused.duckdb", lake, ducklake_catalog=catalog)
    for step in range(int(writes)):
        # the same table from every process: replace this writer's step (a re-run of it must not duplicate)...
        rows = pl.DataFrame({"writer": [who] * 20, "step": [step] * 20, "row": list(range(20))})
        warehouse.replace_rows("results", rows, where="writer = ? AND step = ?", params=[who, step])
        # ...and append to a shared log
        warehouse.append("events", pl.DataFrame({"writer": [who], "step": [step]}))
    # a step run again replaces its rows rather than adding a second copy
    warehouse.replace_rows("results", rows, where="writer = ? AND step = ?", params=[who, step])
""")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, S3]]:
    with postgres_server(tmp_path_factory.mktemp("postgres")) as postgres, s3_server() as s3:
        s3.create_bucket(BUCKET)
        yield postgres, s3


def _warehouse(postgres: Postgres, s3: S3, database: str) -> Warehouse:
    return Warehouse("unused.duckdb", Lake(f"s3://{BUCKET}/{database}", store=s3.object_store()),
                     ducklake_catalog=postgres.conninfo(database))


def test_ducklake_warehouse_takes_writers_from_three_processes_at_once(servers: tuple[Postgres, S3]) -> None:
    postgres, s3 = servers
    postgres.create_database("concurrent")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, who, f"s3://{BUCKET}/concurrent",
                                 postgres.conninfo("concurrent"), s3.endpoint_url, str(WRITES_PER_PROCESS)],
                                stderr=subprocess.PIPE, text=True) for who in ("a", "b", "c")]
    for writer in writers:  # all three start at once, on a catalog none has initialised yet
        _, error = writer.communicate(timeout=600)
        assert writer.returncode == 0, error[-3000:]
    warehouse = _warehouse(postgres, s3, "concurrent")
    counts = warehouse.query("SELECT writer, count(*) AS n, count(DISTINCT (step, row)) AS distinct_rows "
                             "FROM results GROUP BY writer ORDER BY writer")
    expected = WRITES_PER_PROCESS * 20
    assert counts.rows() == [(who, expected, expected) for who in ("a", "b", "c")]
    events = warehouse.query("SELECT writer, count(*) AS n FROM events GROUP BY writer ORDER BY writer")
    assert events.rows() == [(who, WRITES_PER_PROCESS) for who in ("a", "b", "c")]
    # the data files are Parquet in the object store, under the lake's warehouse/ prefix
    assert any(key.startswith("concurrent/warehouse/") and key.endswith(".parquet")
               for key in (o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])))


def test_ducklake_warehouse_lake_tables_and_aion_sql(servers: tuple[Postgres, S3], tmp_path: Path) -> None:
    postgres, s3 = servers
    postgres.create_database("views")
    warehouse = _warehouse(postgres, s3, "views")
    warehouse.write_lake_partition("cutouts", "r1|0000", pl.DataFrame({"release": ["r1"] * 3, "object_id": list("abc")}))
    warehouse.write_lake_partition("cutouts", "r2|0000", pl.DataFrame({"release": ["r2"] * 2, "object_id": list("de")}))
    assert warehouse.query("SELECT count(*) AS n FROM cutouts")["n"][0] == 5
    assert "cutouts" in warehouse.tables() and warehouse.location().startswith("DuckLake")
    warehouse.delete_lake_partition("cutouts", "r2|0000")
    assert warehouse.query("SELECT release, count(*) AS n FROM cutouts GROUP BY 1").rows() == [("r1", 3)]

    # A new warehouse object (another pod) over a lake that already has files sees the same view.
    assert _warehouse(postgres, s3, "views").query("SELECT count(*) AS n FROM cutouts")["n"][0] == 3

    # `aion sql` on the cluster profile reads the same tables.
    from aion_assets.platform.settings import isolated_stack_env

    environment = isolated_stack_env(
        **s3.environment(), AION_PROFILE="cluster", AION_HOME=str(tmp_path / "aion"),
        AION_LAKE_ROOT=f"s3://{BUCKET}/views", AION_DUCKLAKE_CATALOG=postgres.conninfo("views"),
        AION_DAGSTER_POSTGRES_URL=postgres.sqlalchemy_url("views"), MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    result = subprocess.run([str(Path(sys.executable).parent / "aion"), "sql", "--json",
                             "SELECT object_id FROM cutouts ORDER BY object_id"],
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["object_id"] for row in json.loads(result.stdout)] == ["a", "b", "c"]
