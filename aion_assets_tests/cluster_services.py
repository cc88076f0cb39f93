"""Real servers on 127.0.0.1 for the end-to-end "cluster profile" tests: PostgreSQL, an S3 API (moto) and an
MLflow tracking server backed by both.

Each helper is a context manager: it starts the server on a free loopback port, waits until it answers, yields a
small frozen dataclass describing it, and on exit stops it and removes its files, also when the body raised.
Nothing here is mocked: clients (psycopg2, DuckDB's postgres/httpfs/ducklake extensions, boto3, s3fs, MLflow)
talk to these servers over TCP exactly as they would to a cluster's.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aion_assets.app.process import free_port
from aion_assets.platform.lake import ObjectStore

LOOPBACK = "127.0.0.1"
BIN = Path(sys.executable).parent
INSTALL_HINT = "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with `apt-get install postgresql`"


# ------------------------------------------------------------------------------------------------------- DuckDB


# --------------------------------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster that trusts every loopback connection (no password)."""

    host: str
    port: int
    user: str

    def url(self, db: str) -> str:
        """The URL form libpq and psycopg2.connect take."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db}"

    def sqlalchemy_url(self, db: str) -> str:
        """The SQLAlchemy form (MLflow's --backend-store-uri). The driver is explicit: SQLAlchemy 2.1 maps a bare
        postgresql:// to psycopg 3, which is not installed (psycopg2-binary is)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{db}"

    def conninfo(self, db: str) -> str:
        """The libpq key=value form, which DuckDB's postgres and ducklake extensions take."""
        return f"dbname={db} host={self.host} port={self.port} user={self.user}"

    def create_database(self, name: str) -> None:
        import psycopg2
        from psycopg2 import sql

        # CREATE DATABASE refuses to run inside a transaction block, hence autocommit.
        connection = psycopg2.connect(self.url("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/*/bin (Debian's layout, not on PATH), else wherever PATH has initdb."""
    candidates = [Path(found) for found in glob.glob("/usr/lib/postgresql/*/bin")
                  if (Path(found) / "initdb").exists() and (Path(found) / "pg_ctl").exists()]
    if candidates:
        return max(candidates, key=lambda path: _version_key(path.parent.name))
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise RuntimeError(INSTALL_HINT)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit()) or (0,)


def _as_postgres_user(command: Sequence[str]) -> list[str]:
    """``command`` as the `postgres` OS user when we are root: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return list(command)
    runuser = shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if Path(p).exists()),
                                              None)
    if runuser:
        return [runuser, "-u", "postgres", "--", *command]
    su = shutil.which("su") or "/bin/su"
    return [su, "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]


def _run_checked(command: Sequence[str], cwd: Path, what: str, log: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shown = _tail(log) if log else ""
        raise RuntimeError(f"{what} failed with status {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
                           f"{shown}")


def _tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return f"\n--- {path.name} ---\n" + path.read_text(errors="replace")[-chars:]
    return ""


@contextlib.contextmanager
def postgres_server(root: Path) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free loopback port; its server log is copied to root/postgres.log.

    The cluster itself lives in a fresh mkdtemp folder rather than under ``root``: pytest's tmp folders are 0700
    root-owned, which the `postgres` user (that the server must run as when we are root) cannot traverse, and a
    short path keeps the Unix socket under the 107-byte limit.
    """
    bin_dir = postgres_bin_dir()
    root.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="aion-pg-"))
    try:
        data, sockets, log = base / "data", base / "sockets", base / "server.log"
        sockets.mkdir()
        os.chmod(base, 0o755)
        if os.geteuid() == 0:
            for path in (base, sockets):
                shutil.chown(path, "postgres", "postgres")
        # --locale=C: any encoding goes with it, and no dependence on which locales the image generated;
        # --no-sync: nothing here needs to survive a crash.
        _run_checked(_as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                        "-E", "UTF8", "--locale=C", "--no-sync"]), base, "initdb")
        port = free_port()
        # A test cluster: durability off for speed; 200 connections because MLflow, DuckLake catalogs and many
        # DuckDB connections share it.
        options = (f"-h {LOOPBACK} -p {port} -k {sockets} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        pg_ctl = str(bin_dir / "pg_ctl")
        try:
            _run_checked(_as_postgres_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60",
                                            "start"]), base, "pg_ctl start", log)
            yield Postgres(host=LOOPBACK, port=port, user="postgres")
        finally:
            # Also after a failed start: a server that came up too late for -w would otherwise outlive its files.
            # `fast` disconnects clients that are still attached (MLflow's pool, DuckDB connections).
            for mode in ("fast", "immediate"):
                try:
                    _run_checked(_as_postgres_user([pg_ctl, "-D", str(data), "-m", mode, "-w", "-t", "30", "stop"]),
                                 base, "pg_ctl stop")
                    break
                except (RuntimeError, subprocess.TimeoutExpired):
                    if not (data / "postmaster.pid").exists():
                        break
            with contextlib.suppress(OSError):
                shutil.copyfile(log, root / "postgres.log")
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3:
    """A running S3 API (moto) that accepts any credentials; these are the fixed ones the helpers hand out."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        """host:port without the scheme, as DuckDB's CREATE SECRET (ENDPOINT ...) wants it."""
        return self.endpoint_url.split("://", 1)[1]

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key, region_name=self.region)

    def create_bucket(self, name: str) -> None:
        # us-east-1 takes no CreateBucketConfiguration (any other region requires one).
        self.client().create_bucket(Bucket=name)

    def environment(self) -> dict[str, str]:
        """What boto3/s3fs (AWS_ENDPOINT_URL, botocore >= 1.28) and MLflow's S3 artifact store read."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key, "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region, "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url}

    def object_store(self) -> ObjectStore:
        """This server as the lake's object store: what s3fs and DuckDB's httpfs are pointed at."""
        return ObjectStore(endpoint_url=self.endpoint_url, access_key_id=self.access_key_id,
                           secret_access_key=self.secret_access_key, region=self.region)


@contextlib.contextmanager
def s3_server() -> Iterator[S3]:
    """moto's S3 API as a child process (`moto_server`) on a free loopback port.

    A child rather than moto's in-process ThreadedMotoServer: its state then cannot mix with a `mock_aws` of
    another test in this process, and it serves requests while this process holds the GIL.
    """
    executable = BIN / "moto_server"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "moto.server"]
    port = free_port()
    with tempfile.TemporaryFile() as output:
        child = subprocess.Popen([*command, "-H", LOOPBACK, "-p", str(port)], stdout=output,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        endpoint_url = f"http://{LOOPBACK}:{port}"
        try:
            # moto answers GET /moto-api/ once its WSGI app is up.
            _wait_for_http(child, f"{endpoint_url}/moto-api/", 60, lambda: _read_tail(output), "moto_server")
            yield S3(endpoint_url=endpoint_url)
        finally:
            _stop_group(child)


def _read_tail(output: IO[bytes], chars: int = 3000) -> str:
    output.flush()
    output.seek(0)
    return output.read().decode(errors="replace")[-chars:]


# ------------------------------------------------------------------------------------------------------- MLflow


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str


@contextlib.contextmanager
def mlflow_server(root: Path, postgres: Postgres, s3: S3, bucket: str) -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port: runs and the model registry in the `mlflow` database of
    ``postgres`` (created here), artifacts proxied by the server (`mlflow-artifacts:`) to s3://BUCKET/mlartifacts.

    The bucket must exist. Its log is root/mlflow-server.log.
    """
    root.mkdir(parents=True, exist_ok=True)
    postgres.create_database("mlflow")
    port = free_port()
    log = root / "mlflow-server.log"
    # One worker: the CI machine has two cores and the tests send a handful of requests.
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres.sqlalchemy_url("mlflow"),
               "--artifacts-destination", f"s3://{bucket}/mlartifacts", "--serve-artifacts",
               "--host", LOOPBACK, "--port", str(port), "--workers", "1"]
    # The server's S3 client (boto3) finds moto through MLFLOW_S3_ENDPOINT_URL and the AWS_* variables;
    # a tracking URI of ours must not leak into the server.
    env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    env.update(s3.environment())
    # MLflow 3 also starts a huey job runner (another full MLflow import, for server-side jobs such as trace
    # rollups) that nothing here uses; on two cores it doubles the start-up time.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(log, "ab") as output:
        child = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        tracking_uri = f"http://{LOOPBACK}:{port}"
        try:
            _wait_for_http(child, f"{tracking_uri}/health", 90, lambda: _tail(log), "mlflow server")
            yield MlflowServer(tracking_uri=tracking_uri)
        finally:
            _stop_group(child)


# ------------------------------------------------------------------------------------------------------ helpers


def _wait_for_http(child: subprocess.Popen, url: str, timeout_s: float, tail: Callable[[], str], what: str) -> None:
    """Poll ``url`` until it answers 200; raise with the child's output if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{what} exited with status {child.returncode} before answering.\n{tail()}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer {url} within {timeout_s:.0f} s.\n{tail()}")


def _stop_group(child: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the child's whole process group (mlflow server forks uvicorn), then SIGKILL what is left."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    # Also after a clean exit of the leader: a worker it forked may linger in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    if child.poll() is None:
        child.wait()
