"""The cluster profile on one machine, every engine real except Kubernetes: Dagster's run, event and schedule
storage in PostgreSQL, the warehouse in DuckLake (catalog in PostgreSQL, data files in the object store), the
lake on an S3 server (moto), MLflow as a tracking server (PostgreSQL backend, artifacts in the object store), and
the real `dagster-daemon` running the release sensor, the automation sensor and the run queue. Runs use the
multiprocess executor in place of `k8s_job_executor` (AION_EXECUTOR=multiprocess).

The story: a stack is built (ingest, describe, embed, train, index); the daemon starts; two new releases land in
the watched folder at once; the sensor registers their shards and queues one ingest run per shard, several of
which write the warehouse at the same time; the automation embeds and indexes them shard by shard and merges the
index; the test ends when `aion search` finds the new objects, then checks that nothing was lost or written
twice. Users query the warehouse all along.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from aion_assets_tests.app_stack import STACK_VARIABLES, TINY_TRAINING
from aion_assets_tests.cluster_services import mlflow_server, postgres_server, s3_server
from aion_assets_tests.servers import running_daemon
from aion_assets_tests.subsets import copy_subset

pytestmark = pytest.mark.slow

BUCKET = "aion-lake"
SHARD_SIZE = 16  # small shards: each new release is two or more partitions, so ingest runs overlap
NEW_RELEASES = {"gz-decals-rings": 24, "spacewarps-cfhtls": 20}
WAIT_S = 600  # below the suite's 900 s per test, after the stack's build: a stall fails with the daemon's log
BIN = Path(sys.executable).parent


def _described_gz1_subset(sample_releases: Path, shared_data: Path, n: int) -> list[str]:
    recorded = [json.loads(line) for line in (shared_data / "descriptions" / "recorded_descriptions.jsonl").open()]
    described = {r["object_id"] for r in recorded if r["release"] == "gz1-sdss"}
    catalog = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", infer_schema_length=0)
    return catalog.filter(pl.col("object_id").is_in(list(described)))["object_id"].head(n).to_list()


def _first_ids(release: Path, n: int) -> list[str]:
    return pl.read_csv(release / "catalog.csv", infer_schema_length=0)["object_id"].head(n).to_list()


@contextlib.contextmanager
def _cluster(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """PostgreSQL (databases for Dagster, DuckLake and MLflow), the S3 server and MLflow, and the environment
    that selects the cluster profile over them (set in this process; the daemon and the CLI inherit it)."""
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(postgres_server(root / "postgres"))
        for database in ("dagster", "ducklake"):
            postgres.create_database(database)
        s3 = stack.enter_context(s3_server())
        s3.create_bucket(BUCKET)
        mlflow = stack.enter_context(mlflow_server(root / "mlflow", postgres, s3, BUCKET))
        environment = {
            **s3.environment(),
            "AION_PROFILE": "cluster",
            "AION_EXECUTOR": "multiprocess",
            "AION_HOME": str(root / "aion"),  # local caches only: every shared location is set below
            "DAGSTER_HOME": str(root / "dagster"),
            "AION_DAGSTER_POSTGRES_URL": postgres.sqlalchemy_url("dagster"),
            "AION_DUCKLAKE_CATALOG": postgres.conninfo("ducklake"),
            "AION_LAKE_ROOT": f"s3://{BUCKET}/aion",
            "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
            "AION_RELEASES_DIR": str(root / "releases"),
            "AION_SHARD_SIZE": str(SHARD_SIZE),
            "AION_SENSOR_INTERVAL_S": "5",
        }
        for variable in STACK_VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield environment


def _aion(*args: str) -> subprocess.CompletedProcess:
    from aion_assets.platform.settings import PROJECT_ROOT, subprocess_env

    return subprocess.run([str(BIN / "aion"), *args], cwd=PROJECT_ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)


def _served_ids(lake) -> pl.DataFrame:
    """The (release, object_id) rows of the index the served pointer names (empty before there is one)."""
    from aion_assets.platform.layout import search_index_dir
    from aion_assets.search.artifacts import load_index_from_lake, read_latest_pointer

    try:
        version = read_latest_pointer(lake).version
        return load_index_from_lake(lake, search_index_dir(version)).ids.select("release", "object_id")
    except FileNotFoundError:
        return pl.DataFrame(schema={"release": pl.String, "object_id": pl.String})


def _failed_runs(instance) -> list[str]:
    """Each failed run's job, partitions and first step failure: the daemon does not retry them, so one is the
    end of the wait."""
    import dagster as dg

    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        error = steps[0].dagster_event.step_failure_data.error.message if steps else "no step failed"
        failed.append(f"{run.job_name} {dict(run.tags)}: {error}")
    return failed


def _wait_until_searchable(releases: set[str], warehouse, instance, daemon: subprocess.Popen,
                           log: Path) -> list[int]:
    """Poll until the served index holds every new release's cutouts; meanwhile query the warehouse as a user
    would. Returns the cutout counts seen, in order."""
    counts: list[int] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited: {log.read_text()[-3000:]}"
        assert not (failed := _failed_runs(instance)), failed
        counts.append(int(warehouse.query("SELECT count(*) AS n FROM cutouts")["n"][0]))
        cutouts = warehouse.query("SELECT release, object_id FROM cutouts")
        expected = cutouts.filter(pl.col("release").is_in(list(releases)))
        if expected["release"].n_unique() == len(releases):
            served = _served_ids(warehouse.lake)
            if expected.join(served, on=["release", "object_id"], how="anti").is_empty():
                return counts
        time.sleep(5)
    raise TimeoutError(f"new releases not searchable within {WAIT_S} s; daemon log: {log.read_text()[-4000:]}")


def _overlapping(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:]))


def test_cluster_new_releases_become_searchable_through_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_releases: Path, shared_data: Path,
) -> None:
    import dagster as dg

    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.cutouts.sensors import ingest_job
    from aion_assets.definitions import build_definitions
    from aion_assets.platform.warehouse import stack_warehouse
    from aion_assets.runner import materialize, stack_instance

    releases = tmp_path / "releases"
    copy_subset(sample_releases / "gz1-sdss", releases / "gz1-sdss",
                _described_gz1_subset(sample_releases, shared_data, 48))
    with _cluster(tmp_path, monkeypatch) as environment:
        instance = stack_instance()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        register_release_partitions(instance)
        summaries = materialize(build_definitions(), "+key:search_index", instance,
                                op_config={"alignment_model": TINY_TRAINING}, progress=lambda line: None)
        assert summaries and all(s.success for s in summaries), [s for s in summaries if not s.success]
        warehouse = stack_warehouse()
        assert warehouse.is_ducklake
        first = warehouse.query("SELECT count(*) AS n FROM cutouts")["n"][0]
        assert first > 0 and len(_served_ids(warehouse.lake)) == first

        daemon_log = tmp_path / "daemon.log"
        with running_daemon(daemon_log) as daemon:
            for name, n in NEW_RELEASES.items():  # both land at once, as a survey's data release would
                copy_subset(sample_releases / name, releases / name, _first_ids(sample_releases / name, n))
            counts = _wait_until_searchable(set(NEW_RELEASES), warehouse, instance, daemon, daemon_log)

        # Users queried all along: every query answered, and the warehouse only grew.
        assert counts == sorted(counts)
        ingest_runs = [r for r in instance.get_run_records(dg.RunsFilter(job_name=ingest_job.name))
                       if r.dagster_run.tags.get("dagster/partition", "").split("|")[0] in NEW_RELEASES]
        assert len(ingest_runs) >= len(NEW_RELEASES) * 2
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in ingest_runs)
        assert _overlapping([(r.start_time, r.end_time) for r in ingest_runs]), "no two ingest runs overlapped"

        # Nothing lost: every object of each new release is a cutout or a quarantined row, with its reason.
        cutouts = warehouse.query("SELECT release, object_id FROM cutouts")
        quarantined = warehouse.query("SELECT release, object_id FROM quarantine WHERE object_id IS NOT NULL")
        for name, n in NEW_RELEASES.items():
            landed = set(cutouts.filter(pl.col("release") == name)["object_id"])
            set_aside = set(quarantined.filter(pl.col("release") == name)["object_id"])
            assert landed | set_aside == set(_first_ids(sample_releases / name, n)), name
        # Nothing written twice: in the warehouse, and in the served index.
        assert cutouts.height == cutouts.unique().height
        served = _served_ids(warehouse.lake)
        assert served.height == served.unique().height == cutouts.height
        assert served.sort(["release", "object_id"]).equals(cutouts.sort(["release", "object_id"]))

        # A person finds the new objects with the CLI, over the served (merged) index.
        found = _aion("search", "a galaxy with a ring", "--release", "gz-decals-rings", "--k", "5", "--json")
        assert found.returncode == 0, found.stderr[-3000:]
        assert {row["release"] for row in json.loads(found.stdout)} == {"gz-decals-rings"}
        counted = _aion("sql", "SELECT count(*) AS n FROM cutouts", "--json")
        assert counted.returncode == 0 and str(cutouts.height) in counted.stdout, counted.stderr[-2000:]

        # Where the engines keep things: Dagster runs in PostgreSQL, data files and MLflow artifacts in S3.
        assert instance.get_runs_count() >= len(ingest_runs) + len(summaries)
        import boto3

        s3 = boto3.client("s3", endpoint_url=environment["AWS_ENDPOINT_URL"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        assert any(k.startswith("aion/tables/cutouts/gz-decals-rings/") for k in keys)
        assert any(k.startswith("aion/warehouse/") for k in keys)  # DuckLake's own data files
        assert any(k.startswith("mlartifacts/") and k.endswith("heads.safetensors") for k in keys)
