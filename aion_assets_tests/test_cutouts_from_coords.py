"""`aion releases from-coords` against a real local HTTP server that plays the Legacy Survey cutout service."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest
from click.testing import CliRunner

from aion_assets.cutouts import from_coords as from_coords_module
from aion_assets.cutouts import from_coords_cli
from aion_assets.cutouts.from_coords import (
    SERVICE_URL_ENV,
    CoordinateCatalogError,
    FetchOutcome,
    ServiceConfig,
    build_release,
    image_name,
    jpeg_problem,
    object_id_for,
    parse_retry_after,
    read_coordinate_catalog,
)
from aion_assets.cutouts.from_coords_cli import EXIT_PARTIAL, from_coords
from aion_assets.platform.settings import PROJECT_ROOT

SERVICE_PATH = "/viewer/cutout.jpg"


class CutoutService:
    """The cutout endpoint: real JPEG bytes, a scripted fault per request of an object, and counts of everything.

    Objects are told apart by their ``ra`` parameter. ``script[ra]`` lists what the 1st, 2nd... request for that
    position gets; past the list (or for an unscripted position) the answer is the JPEG.
    """

    def __init__(self, jpeg: bytes, delay_s: float = 0.0, hang_s: float = 1.0) -> None:
        self.jpeg = jpeg
        self.delay_s = delay_s
        self.hang_s = hang_s
        # From this many requests on, every answer takes slow_s: lets a test stop a run part-way, never too late.
        self.slow_after: int | None = None
        self.slow_s = 2.0
        self.script: dict[str, list[str]] = {}
        self.times: dict[str, list[float]] = defaultdict(list)
        self.params: list[dict[str, str]] = []
        self.n_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.url = ""

    def count(self, ra: float) -> int:
        return len(self.times[repr(ra)])

    def total(self) -> int:
        return self.n_requests

    def handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                      declared_length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body) if declared_length is None else declared_length))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlparse(self.path)
                if url.path != SERVICE_PATH:
                    self._send(404, b"no such endpoint")
                    return
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                ra = params.get("ra", "")
                with service.lock:
                    attempt = len(service.times[ra])
                    service.times[ra].append(time.monotonic())
                    service.n_requests += 1
                    slow = service.slow_after is not None and service.n_requests > service.slow_after
                    service.params.append(params)
                    steps = service.script.get(ra, [])
                    behaviour = steps[attempt] if attempt < len(steps) else "ok"
                if behaviour == "hang":
                    # Longer than the client's timeout: the client gives up and asks again.
                    time.sleep(service.hang_s)
                    return
                with service.lock:
                    service.in_flight += 1
                    service.max_in_flight = max(service.max_in_flight, service.in_flight)
                try:
                    if slow or service.delay_s:
                        time.sleep(service.slow_s if slow else service.delay_s)
                    jpeg = service.jpeg
                    if behaviour == "ok":
                        self._send(200, jpeg)
                    elif behaviour == "429":
                        self._send(429, b"slow down", {"Retry-After": "1"})
                    elif behaviour in ("500", "404"):
                        self._send(int(behaviour), b"error")
                    elif behaviour == "truncated":
                        # Promise the whole image, send half, hang up.
                        self._send(200, jpeg[: len(jpeg) // 2], declared_length=len(jpeg))
                        self.close_connection = True
                    elif behaviour == "corrupt":
                        # A well-formed response whose body is not a whole JPEG.
                        self._send(200, jpeg[: len(jpeg) // 2])
                    else:
                        raise AssertionError(behaviour)
                finally:
                    with service.lock:
                        service.in_flight -= 1

        return Handler


@pytest.fixture
def jpeg(sample_releases: Path) -> bytes:
    first_image = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", n_rows=1)["image"][0]
    return (sample_releases / "gz1-sdss" / first_image).read_bytes()


@pytest.fixture
def service(jpeg: bytes) -> Iterator[CutoutService]:
    state = CutoutService(jpeg)
    server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}{SERVICE_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def write_catalog(path: Path, rows: list[dict[str, object]]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fast_config(url: str, **overrides: object) -> ServiceConfig:
    settings = dict(url=url, timeout_s=0.3, max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05,
                    concurrency=4)
    settings.update(overrides)
    return ServiceConfig(**settings)  # type: ignore[arg-type]


# -- small pure pieces ---------------------------------------------------------------------------------------------
def test_names_and_headers() -> None:
    assert object_id_for(150.1, 2.2) == "J150.10000+2.20000"
    assert object_id_for(3.0, -45.123456) == "J3.00000-45.12346"
    assert image_name("../../etc/passwd") == "images/_.._etc_passwd.jpg"
    assert image_name("NGC 1300") == "images/NGC_1300.jpg"
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= parse_retry_after(format_datetime(later, usegmt=True)) <= 31


def test_cli_defaults_match_the_module() -> None:
    for name in ("DEFAULT_SERVICE_URL", "SERVICE_URL_ENV", "DEFAULT_PIXSCALE"):
        assert getattr(from_coords_cli, name) == getattr(from_coords_module, name)


def test_jpeg_validation(jpeg: bytes) -> None:
    assert jpeg_problem(jpeg, 160) is None
    assert "truncated" in jpeg_problem(jpeg[: len(jpeg) // 2], 160)
    assert "expected 64x64" in jpeg_problem(jpeg, 64)
    assert jpeg_problem(b"", 160) == "empty body"


def test_coordinate_list_validation(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "coords.csv", [
        {"RA": "10.5", "Dec": "-3.25", "kind": "spiral"},
        {"RA": "10.5", "Dec": "-3.25", "kind": "repeat"},
        {"RA": "400", "Dec": "0", "kind": "bad"},
        {"RA": "", "Dec": "1", "kind": "empty"},
        {"RA": "20", "Dec": "-90", "kind": "pole"},
    ])
    requests, rejected = read_coordinate_catalog(catalog)
    assert [r.object_id for r in requests] == ["J10.50000-3.25000", "J20.00000-90.00000"]
    assert requests[0].labels == {"kind": "spiral"}
    assert [r.row for r in rejected] == [1, 2, 3]
    assert "duplicate" in rejected[0].reason and "ra 400.0" in rejected[1].reason and "empty" in rejected[2].reason
    bom = tmp_path / "excel.csv"
    bom.write_text("\ufeffRA ,DEC\n1.5,2.5\n", encoding="utf-8")
    assert [r.object_id for r in read_coordinate_catalog(bom)[0]] == ["J1.50000+2.50000"]
    with pytest.raises(CoordinateCatalogError, match="needs columns ra and dec"):
        read_coordinate_catalog(write_catalog(tmp_path / "nodec.csv", [{"ra": "1", "name": "x"}]))


# -- against the service ------------------------------------------------------------------------------------------
FAULTS = {  # object -> what its successive requests get
    "plain": [],
    "rate_limited": ["429"],
    "server_error": ["500"],
    "hung": ["hang"],
    "cut_short": ["truncated"],
    "garbled": ["corrupt"],
    "always_down": ["500"] * 10,
    "missing": ["404"],
}


def test_faults_are_retried_then_recorded(service: CutoutService, jpeg: bytes, tmp_path: Path) -> None:
    names = list(FAULTS)
    ras = {name: 10.0 + index for index, name in enumerate(names)}
    for name, steps in FAULTS.items():
        service.script[repr(ras[name])] = steps
    rows = [{"object_id": name, "ra": ras[name], "dec": -5.5, "morphology": f"m-{name}"} for name in names]
    rows.append({"object_id": "", "ra": 200.25, "dec": 95.0, "morphology": "beyond the pole"})
    rows.append({"object_id": "plain", "ra": 30.0, "dec": 1.0, "morphology": "repeated id"})
    catalog = write_catalog(tmp_path / "coords.csv", rows)
    out = tmp_path / "releases" / "my-targets"

    started = time.monotonic()
    result = CliRunner().invoke(from_coords, [
        str(catalog), str(out), "--layer", "ls-dr10", "--size", "160", "--service-url", service.url,
        "--timeout", "0.3", "--max-attempts", "4", "--backoff", "0.01", "--concurrency", "4", "--json",
    ])
    elapsed = time.monotonic() - started
    assert result.exit_code == EXIT_PARTIAL, result.output
    summary = json.loads(result.output)

    expected_requests = {"plain": 1, "rate_limited": 2, "server_error": 2, "hung": 2, "cut_short": 2, "garbled": 2,
                         "always_down": 4, "missing": 1}
    assert {name: service.count(ras[name]) for name in names} == expected_requests
    assert summary["http_requests"] == sum(expected_requests.values()) == service.total()
    # Retry-After: 1 was honoured, and the client did not wait far longer than it had to
    first, second = service.times[repr(ras["rate_limited"])]
    assert second - first >= 0.95
    assert elapsed < 10
    assert {(p["layer"], p["size"], p["pixscale"]) for p in service.params} == {("ls-dr10", "160", "0.262")}

    good = ["plain", "rate_limited", "server_error", "hung", "cut_short", "garbled"]
    catalog_rows = read_csv_rows(out / "catalog.csv")
    assert [r["object_id"] for r in catalog_rows] == good
    assert list(catalog_rows[0]) == ["object_id", "image", "ra", "dec", "morphology"]
    for row in catalog_rows:
        assert float(row["ra"]) == ras[row["object_id"]] and row["morphology"] == f"m-{row['object_id']}"
        assert hashlib.sha256((out / row["image"]).read_bytes()).digest() == hashlib.sha256(jpeg).digest()

    failed = {r["object_id"]: r["reason"] for r in read_csv_rows(out / "failed.csv")}
    assert set(failed) == {"always_down", "missing", "", "plain"}
    assert "HTTP 500" in failed["always_down"] and "4 attempts" in failed["always_down"]
    assert failed["missing"].startswith("HTTP 404")
    assert "dec 95.0" in failed[""] and "duplicate" in failed["plain"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["release"] == "my-targets" and manifest["n_objects"] == len(good)
    assert manifest["n_failed"] == 4 and manifest["cutout_pixels"] == 160
    assert not list((out / "images").glob(".*"))  # no temporary file left behind

    # The folder is a release the cutouts domain ingests: every object accepted, labels carried.
    from aion_assets.cutouts.ingest import ingest_shard
    from aion_assets.cutouts.releases import load_release

    release = load_release(out)
    assert release.name == "my-targets" and release.n_objects == len(good)
    assert release.label_columns == ["morphology"]
    shard = ingest_shard(out, release, 0, 1000)
    assert shard.quarantine.height == 0
    assert sorted(shard.cutouts["object_id"].to_list()) == sorted(good)
    assert shard.rgb.shape == (len(good), 160, 160, 3)


def test_concurrency_is_bounded(service: CutoutService, tmp_path: Path) -> None:
    service.delay_s = 0.05
    rows = [{"ra": 100 + i * 0.01, "dec": 20.0} for i in range(24)]
    catalog = write_catalog(tmp_path / "coords.csv", rows)
    summary = build_release(catalog, tmp_path / "bounded", fast_config(service.url, concurrency=3))
    assert summary.downloaded == 24 and not summary.failed
    assert service.total() == 24
    # the bound holds and the workers really overlap
    assert service.max_in_flight == 3


RUN_CLI = "from aion_assets.cutouts.from_coords_cli import from_coords; from_coords()"


def test_killed_run_resumes_without_downloading_twice(service: CutoutService, jpeg: bytes, tmp_path: Path) -> None:
    service.delay_s = 0.05
    service.slow_after = 6
    rows = [{"object_id": f"obj{i:02d}", "ra": 50 + i * 0.5, "dec": -10.0, "z": f"0.{i:02d}"} for i in range(16)]
    catalog = write_catalog(tmp_path / "coords.csv", rows)
    out = tmp_path / "resumable"
    images = out / "images"

    env = {**os.environ, SERVICE_URL_ENV: service.url, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, str(catalog), str(out), "--concurrency", "2", "--timeout", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(images.glob("*.jpg"))) < 4:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    time.sleep(0.2)  # let any request already on the wire reach the server before counting
    done_before = sorted(p.stem for p in images.glob("*.jpg"))
    assert 4 <= len(done_before) < len(rows), "the run must be killed part-way"
    assert not (out / "manifest.json").exists()
    for name in done_before:  # atomic writes: every file that exists is a whole image
        assert jpeg_problem((images / f"{name}.jpg").read_bytes(), 160) is None

    # Damage one finished file and leave a stray partial download: the resume must repair both.
    damaged = done_before[0]
    (images / f"{damaged}.jpg").write_bytes(jpeg[:500])
    (images / f".{done_before[1]}.jpg.part-deadbeef").write_bytes(jpeg[:100])
    counts_before = {row["object_id"]: service.count(row["ra"]) for row in rows}
    service.slow_after = None

    manifest_seen_during_run: list[bool] = []

    def watch(outcome: FetchOutcome) -> None:
        manifest_seen_during_run.append((out / "manifest.json").exists())

    summary = build_release(catalog, out, fast_config(service.url, concurrency=2, timeout_s=2.0), on_outcome=watch)
    assert not summary.failed
    assert summary.skipped == len(done_before) - 1
    assert summary.downloaded == len(rows) - summary.skipped
    new_requests = {row["object_id"]: service.count(row["ra"]) - counts_before[row["object_id"]] for row in rows}
    for object_id, fresh in new_requests.items():
        expected = 0 if object_id in done_before and object_id != damaged else 1
        assert fresh == expected, (object_id, fresh)
    assert manifest_seen_during_run and not any(manifest_seen_during_run)
    assert not list(images.glob(".*"))

    # manifest.json is the last file written
    manifest_mtime = (out / "manifest.json").stat().st_mtime_ns
    others = [p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert all(p.stat().st_mtime_ns <= manifest_mtime for p in others)
    assert [r["object_id"] for r in read_csv_rows(out / "catalog.csv")] == [r["object_id"] for r in rows]

    # A third run finds everything: no request, and no file rewritten (the release's fingerprint stays put).
    total = service.total()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = build_release(catalog, out, fast_config(service.url))
    assert again.skipped == len(rows) and again.http_requests == 0 and service.total() == total
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
