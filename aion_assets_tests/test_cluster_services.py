"""The cluster profile's servers, for real: a PostgreSQL 15 cluster (initdb/pg_ctl), moto's S3 API as a child
process and an `mlflow server` over both, each on a free 127.0.0.1 port. The clients are the real ones too:
psycopg2, DuckDB with its postgres and httpfs extensions loaded from the PyPI extension packages, boto3, s3fs
and MLflow's fluent API and client. Nothing is mocked.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aion_assets.platform.duckdb_extensions import connection_config, load_extensions
from aion_assets_tests.cluster_services import (
    S3,
    Postgres,
    mlflow_server,
    postgres_server,
    s3_server,
)

BUCKET = "aion-cluster"


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    with postgres_server(tmp_path / "postgres") as server:
        yield server


@pytest.fixture
def s3() -> Iterator[S3]:
    with s3_server() as server:
        yield server


def _duckdb(*extensions: str) -> duckdb.DuckDBPyConnection:
    # No autoinstall: the machine has no network, so every extension must come from its PyPI package file.
    con = duckdb.connect(config=connection_config())
    load_extensions(con, extensions)
    return con


def test_cluster_services_postgres_accepts_connections(postgres: Postgres) -> None:
    postgres.create_database("catalog")
    with psycopg2.connect(postgres.url("catalog")) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE sources (id integer PRIMARY KEY, name text NOT NULL)")
        cursor.execute("INSERT INTO sources VALUES (%s, %s), (%s, %s)", (1, "M31", 2, "NGC 1300"))
    with psycopg2.connect(postgres.url("catalog")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id, name FROM sources ORDER BY id")
        assert cursor.fetchall() == [(1, "M31"), (2, "NGC 1300")]
        cursor.execute("SHOW max_connections")
        assert cursor.fetchone() == ("200",)
    connection.close()

    con = _duckdb("postgres")
    try:
        con.execute(f"ATTACH '{postgres.conninfo('catalog')}' AS pg (TYPE postgres)")
        assert con.execute("SELECT id, name FROM pg.public.sources ORDER BY id").fetchall() == [
            (1, "M31"), (2, "NGC 1300")]
        # And the other way: a row DuckDB writes is one psycopg2 then reads.
        con.execute("INSERT INTO pg.public.sources VALUES (3, 'from duckdb')")
    finally:
        con.close()
    with psycopg2.connect(postgres.url("catalog")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sources WHERE id = 3")
        assert cursor.fetchone() == ("from duckdb",)
    connection.close()


def test_cluster_services_s3_round_trip(s3: S3) -> None:
    import s3fs

    s3.create_bucket(BUCKET)
    fs = s3fs.S3FileSystem(key=s3.access_key_id, secret=s3.secret_access_key,
                           client_kwargs={"endpoint_url": s3.endpoint_url})
    with fs.open(f"{BUCKET}/notes/hello.txt", "wb") as handle:
        handle.write(b"hello from s3fs")
    assert fs.cat(f"s3://{BUCKET}/notes/hello.txt") == b"hello from s3fs"

    # Two Parquet files at different depths, so the ** glob has to descend more than one level.
    for key, values in (("tables/objects/release=a/part-0.parquet", [1, 2]),
                        ("tables/objects/release=b/day=1/part-0.parquet", [3])):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"object_id": values}), buffer)
        with fs.open(f"{BUCKET}/{key}", "wb") as handle:
            handle.write(buffer.getvalue())

    con = _duckdb("httpfs")
    try:
        con.execute(s3.object_store().duckdb_secret_sql())
        single = f"s3://{BUCKET}/tables/objects/release=a/part-0.parquet"
        assert con.execute(f"SELECT object_id FROM read_parquet('{single}') ORDER BY 1").fetchall() == [(1,), (2,)]
        every = f"s3://{BUCKET}/tables/objects/**/*.parquet"
        assert con.execute(f"SELECT object_id FROM read_parquet('{every}') ORDER BY 1").fetchall() == [
            (1,), (2,), (3,)]
        # DuckDB writes to the bucket too (what DuckLake's data files need), and s3fs sees the object.
        con.execute(f"COPY (SELECT 42 AS answer) TO 's3://{BUCKET}/tables/written/by-duckdb.parquet'")
    finally:
        con.close()
    fs.invalidate_cache()
    with fs.open(f"{BUCKET}/tables/written/by-duckdb.parquet", "rb") as handle:
        assert pq.read_table(handle).to_pylist() == [{"answer": 42}]


def test_cluster_services_mlflow_stores_runs_in_postgres_and_artifacts_in_s3(
        tmp_path: Path, postgres: Postgres, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    # Imported here: MLflow takes seconds to import, and only this test needs it.
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils as tracking_utils

    s3.create_bucket(BUCKET)
    artifact = tmp_path / "summary.txt"
    artifact.write_text("recall@10 = 0.9\n")
    with mlflow_server(tmp_path / "mlflow", postgres, s3, BUCKET) as server:
        # set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ and a module global: monkeypatch restores
        # the variable, the finally below the global, so later tests in this process keep their sqlite stores.
        previous = tracking_utils._tracking_uri
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.tracking_uri)
        mlflow.set_tracking_uri(server.tracking_uri)
        try:
            # No artifact_location: the server's default, the proxied mlflow-artifacts: root, applies.
            experiment_id = mlflow.create_experiment(f"cluster-services-{time.time_ns()}")
            with mlflow.start_run(experiment_id=experiment_id) as run:
                mlflow.log_param("head", "linear")
                mlflow.log_metric("recall_at_10", 0.9)
                mlflow.log_artifact(str(artifact), artifact_path="reports")
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")

            client = MlflowClient()
            logged = client.get_run(run.info.run_id)
            assert logged.data.params == {"head": "linear"}
            assert logged.data.metrics == {"recall_at_10": 0.9}
            assert [entry.path for entry in client.list_artifacts(run.info.run_id, "reports")] == [
                "reports/summary.txt"]

            # As the training asset registers its heads (platform/tracking.register_version).
            client.create_registered_model("cluster-head")
            created = client.create_model_version("cluster-head", source=f"{run.info.artifact_uri}/reports",
                                                  run_id=run.info.run_id)
            version = client.get_model_version("cluster-head", created.version)
            assert (version.version, version.run_id) == ("1", run.info.run_id)
            assert version.source == f"{run.info.artifact_uri}/reports"
        finally:
            mlflow.set_tracking_uri(previous)

    # The run is a row of the server's PostgreSQL database, not of some local store...
    with psycopg2.connect(postgres.url("mlflow")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, experiment_id FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchone() == ("FINISHED", int(experiment_id))
        cursor.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'head'", (run.info.run_id,))
        assert cursor.fetchone() == ("linear",)
        cursor.execute("SELECT version FROM model_versions WHERE name = 'cluster-head'")
        assert cursor.fetchall() == [(1,)]
    connection.close()

    # ...and the artifact an object in the bucket, under the --artifacts-destination prefix.
    key = f"mlartifacts/{experiment_id}/{run.info.run_id}/artifacts/reports/summary.txt"
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/")
    assert key in [item["Key"] for item in listed.get("Contents", [])]
    assert s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"recall@10 = 0.9\n"
