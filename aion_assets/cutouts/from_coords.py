"""Build a release folder from a list of coordinates, downloading JPEG cutouts from the Legacy Survey cutout service.

Pure (no dagster, no click). The service is public and rate-limited, and a large list takes hours, so the download is
built to be interrupted and re-run:

- bounded concurrency (one shared HTTP client, a fixed pool of workers);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and broken bodies; a ``Retry-After`` pauses every
  worker, not just the one that was told;
- every image is decoded before it is accepted and written under a temporary name, then renamed, so a file that
  exists is a whole, valid cutout; a re-run skips those and fetches only what is missing;
- objects that still fail are listed in ``failed.csv`` with their reason instead of stopping the run;
- ``manifest.json`` (what marks a folder as a release for the sensor) is removed while downloads are pending and
  written last, so a half-built folder is never ingested.
"""

from __future__ import annotations

import csv
import email.utils
import io
import json
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import polars as pl
from PIL import Image

from aion_assets.platform.layout import RELEASE_NAME_RULE, is_valid_release_name
from aion_assets.platform.settings import DEFAULT_CUTOUT_SERVICE_URL, get_settings

DEFAULT_SERVICE_URL = DEFAULT_CUTOUT_SERVICE_URL
SERVICE_URL_ENV = "AION_CUTOUT_SERVICE_URL"
DEFAULT_PIXSCALE = 0.262  # arcsec/pixel, the Legacy Surveys' native scale
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# The colour bands the viewer composes for each layer's JPEG; informational (manifest's bands_rendered).
LAYER_BANDS = {"ls-dr10": "griz", "ls-dr10-grz": "grz", "ls-dr9": "grz", "sdss": "gri", "unwise-neo7": "W1,W2"}
CATALOG_RESERVED = ("object_id", "image", "ra", "dec")
SAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")
PART_MARKER = ".part-"

MANIFEST = "manifest.json"
CATALOG = "catalog.csv"
FAILED = "failed.csv"
IMAGES = "images"


class CoordinateCatalogError(ValueError):
    """The input list cannot be read at all (missing file, no ra/dec columns)."""


@dataclass(frozen=True)
class CutoutRequest:
    object_id: str
    ra: float
    dec: float
    image: str  # path inside the release folder, e.g. images/J150.12345+2.20000.jpg
    labels: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectedRow:
    """An input row that cannot be requested (bad coordinates, repeated id)."""

    row: int
    object_id: str | None
    ra: str | None
    dec: str | None
    reason: str


@dataclass(frozen=True)
class FetchOutcome:
    request: CutoutRequest
    status: str  # "downloaded", "skipped" (already present and valid) or "failed"
    attempts: int = 0
    reason: str | None = None
    n_bytes: int = 0


@dataclass(frozen=True)
class ServiceConfig:
    """Where and how cutouts are requested. The defaults suit the public service; tests shrink the timings."""

    url: str = DEFAULT_SERVICE_URL
    layer: str = "ls-dr10"
    pixscale: float = DEFAULT_PIXSCALE
    size: int = 160
    concurrency: int = 8
    timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 300.0  # a Retry-After beyond this is capped: the run must still end

    def params(self, ra: float, dec: float) -> dict[str, str]:
        return {"ra": repr(ra), "dec": repr(dec), "layer": self.layer, "pixscale": repr(self.pixscale),
                "size": str(self.size)}


@dataclass
class BuildSummary:
    release: str
    out_dir: Path
    requested: int  # rows that could be requested
    downloaded: int
    skipped: int
    failed: list[tuple[str, str]]  # (object_id or row, reason), input rejections included
    http_requests: int
    bytes_downloaded: int
    seconds: float
    manifest_written: bool

    @property
    def complete(self) -> bool:
        return not self.failed


def configured_service_url() -> str:
    """AION_CUTOUT_SERVICE_URL (through the settings), else the Legacy Survey viewer's cutout endpoint."""
    return get_settings().cutout_service_url


def object_id_for(ra: float, dec: float) -> str:
    """A name from the position, IAU-like in decimal degrees: ra 150.1, dec 2.2 -> J150.10000+2.20000."""
    return f"J{ra:.5f}{dec:+.5f}"


def image_name(object_id: str) -> str:
    """A file name that is safe on every filesystem and stays inside images/ whatever the id holds."""
    safe = SAFE_FILE_CHARS.sub("_", object_id).lstrip(".") or "_"
    return f"{IMAGES}/{safe}.jpg"


# -- the input list -----------------------------------------------------------------------------------------------
def _parse_float(text: str | None, name: str, low: float, high: float, high_open: bool) -> float:
    if text is None or not text.strip():
        raise ValueError(f"{name} is empty")
    try:
        value = float(text)
    except ValueError as error:
        raise ValueError(f"{name} {text!r} is not a number") from error
    if not math.isfinite(value) or value < low or value > high or (high_open and value == high):
        raise ValueError(f"{name} {value} is outside [{low}, {high}{')' if high_open else ']'}")
    return value


def _plain(column: str) -> str:
    # Spreadsheet exports add a byte-order mark and stray spaces to the first header.
    return column.lstrip("\ufeff").strip().lower()


def read_coordinate_catalog(path: Path) -> tuple[list[CutoutRequest], list[RejectedRow]]:
    """The requests a coordinate list asks for, and the rows that cannot be requested, with reasons.

    Columns are matched without regard to case; ``object_id`` is optional (derived from the position); every
    other column except ``image`` is a label and is carried into the release's catalog unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise CoordinateCatalogError(f"{path}: no such file")
    try:
        frame = (pl.read_parquet(path).with_columns(pl.all().cast(pl.String)) if path.suffix == ".parquet"
                 else pl.read_csv(path, infer_schema_length=0))
    except Exception as error:  # polars raises several types on malformed files
        raise CoordinateCatalogError(f"{path.name} does not parse: {error}") from error
    by_lower = {_plain(column): column for column in frame.columns}
    missing = [c for c in ("ra", "dec") if c not in by_lower]
    if missing:
        raise CoordinateCatalogError(
            f"{path.name} needs columns ra and dec (degrees); missing {', '.join(missing)} "
            f"(has: {', '.join(frame.columns)})")
    label_columns = [c for c in frame.columns if _plain(c) not in CATALOG_RESERVED]

    requests: list[CutoutRequest] = []
    rejected: list[RejectedRow] = []
    seen_ids: dict[str, int] = {}
    seen_files: dict[str, int] = {}
    id_column = by_lower.get("object_id")
    for row_index, record in enumerate(frame.iter_rows(named=True)):
        ra_text, dec_text = record[by_lower["ra"]], record[by_lower["dec"]]
        given_id = (record[id_column] or "").strip() if id_column else ""
        try:
            ra = _parse_float(ra_text, "ra", 0.0, 360.0, high_open=True)
            dec = _parse_float(dec_text, "dec", -90.0, 90.0, high_open=False)
        except ValueError as error:
            rejected.append(RejectedRow(row_index, given_id or None, ra_text, dec_text, f"invalid coordinates: {error}"))
            continue
        object_id = given_id or object_id_for(ra, dec)
        image = image_name(object_id)
        if object_id in seen_ids or image in seen_files:
            first = seen_ids.get(object_id, seen_files.get(image))
            rejected.append(RejectedRow(row_index, object_id, ra_text, dec_text,
                                        f"duplicate object_id or image name (first at row {first})"))
            continue
        seen_ids[object_id] = row_index
        seen_files[image] = row_index
        requests.append(CutoutRequest(object_id, ra, dec, image, {c: record[c] for c in label_columns}))
    return requests, rejected


# -- one cutout ---------------------------------------------------------------------------------------------------
def jpeg_problem(data: bytes, size: int) -> str | None:
    """Why ``data`` is not a whole size x size JPEG, or None when it is."""
    if not data:
        return "empty body"
    # A truncated download loses the end-of-image marker; checked apart from the decoder because a process-wide
    # ImageFile.LOAD_TRUNCATED_IMAGES would let Pillow pad a truncated image silently.
    if not data.rstrip(b"\x00\r\n").endswith(b"\xff\xd9"):
        return "JPEG is truncated (no end-of-image marker)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                return f"not a JPEG ({image.format})"
            image.load()
            if image.size != (size, size):
                return f"image is {image.size[0]}x{image.size[1]}, expected {size}x{size}"
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... on corrupt data
        return f"does not decode: {error}"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now_dt = datetime.fromtimestamp(now, timezone.utc) if now is not None else datetime.now(timezone.utc)
    return max(0.0, (when - now_dt).total_seconds())


class ServicePause:
    """A pause every worker honours: a 429's Retry-After speaks for the whole client, not one request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0

    def pause_for(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self, stop: threading.Event | None = None) -> None:
        while True:
            with self._lock:
                remaining = self._until - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return
            if stop is not None:
                stop.wait(remaining)
            else:
                time.sleep(remaining)


def backoff_delay(attempt: int, config: ServiceConfig, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random, so retries spread out."""
    step = min(config.backoff_max_s, config.backoff_base_s * (2 ** (attempt - 1)))
    return step / 2 + rng.uniform(0, step / 2)


def write_atomically(data: bytes, target: Path) -> None:
    """Write beside the target, then rename: the target is either absent or whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}{PART_MARKER}{uuid.uuid4().hex}")
    try:
        with open(staging, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def fetch_cutout(
    client: httpx.Client,
    request: CutoutRequest,
    out_dir: Path,
    config: ServiceConfig,
    pause: ServicePause | None = None,
    rng: random.Random | None = None,
    count_request: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> FetchOutcome:
    """Download one cutout with retries; never raises for a service or network fault, returns a failed outcome.

    ``stop`` (set on Ctrl-C) ends the retries early so an interrupted run exits within one request timeout.
    """
    pause = pause or ServicePause()
    rng = rng or random.Random()
    stop = stop or threading.Event()
    reason = "not attempted"
    attempt = 0
    for attempt in range(1, config.max_attempts + 1):
        pause.wait(stop)
        if stop.is_set():
            return FetchOutcome(request, "failed", attempt - 1, "interrupted")
        delay: float | None = None
        if count_request:
            count_request()
        try:
            response = client.get(config.url, params=config.params(request.ra, request.dec))
        except httpx.TimeoutException as error:
            reason = f"timeout ({type(error).__name__})"
        except httpx.TransportError as error:  # refused, reset, or a body cut short (RemoteProtocolError)
            reason = f"{type(error).__name__}: {error}"
        else:
            status = response.status_code
            if status == 200:
                problem = jpeg_problem(response.content, config.size)
                if problem is None:
                    write_atomically(response.content, out_dir / request.image)
                    return FetchOutcome(request, "downloaded", attempt, None, len(response.content))
                reason = f"invalid image: {problem}"
            elif status in RETRY_STATUSES:
                reason = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if retry_after is not None:
                    delay = min(retry_after, config.retry_after_max_s)
                    if status in (429, 503):
                        pause.pause_for(delay)
            else:
                # 4xx other than the transient ones: asking again gives the same answer
                detail = response.text[:120].strip().replace("\n", " ") if response.content else ""
                return FetchOutcome(request, "failed", attempt, f"HTTP {status}" + (f": {detail}" if detail else ""))
        if attempt < config.max_attempts:
            stop.wait(delay if delay is not None else backoff_delay(attempt, config, rng))
    return FetchOutcome(request, "failed", attempt, f"{reason} (gave up after {attempt} attempts)")


def existing_cutout_is_valid(path: Path, size: int) -> bool:
    try:
        return jpeg_problem(path.read_bytes(), size) is None
    except OSError:
        return False


# -- the release folder -------------------------------------------------------------------------------------------
def _write_if_changed(data: bytes, target: Path) -> None:
    # An unchanged file keeps its mtime, so a re-run that changes nothing does not look like a new release.
    if target.is_file() and target.read_bytes() == data:
        return
    write_atomically(data, target)


def _csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buffer.getvalue().encode()


def catalog_bytes(requests: list[CutoutRequest]) -> bytes:
    label_columns = list(requests[0].labels) if requests else []
    return _csv_bytes(
        ["object_id", "image", "ra", "dec", *label_columns],
        [[r.object_id, r.image, repr(r.ra), repr(r.dec), *(r.labels.get(c) for c in label_columns)]
         for r in requests],
    )


def manifest_for(release: str, config: ServiceConfig, n_objects: int, n_failed: int) -> dict:
    # No timestamps: a re-run that changes nothing must leave the manifest byte-identical.
    return {
        "release": release,
        "survey": f"DESI Legacy Imaging Surveys ({config.layer})",
        "bands_rendered": LAYER_BANDS.get(config.layer, config.layer),
        "image_format": "jpeg",
        "cutout_pixels": config.size,
        "pixscale_arcsec": config.pixscale,
        "n_objects": n_objects,
        "n_failed": n_failed,
        "source": {"service": config.url, "layer": config.layer, "tool": "aion releases from-coords"},
        "note": "Cutouts downloaded from the Legacy Survey viewer's cutout service for a list of coordinates",
    }


def _remove_stale_parts(images_dir: Path) -> None:
    if images_dir.is_dir():
        for leftover in images_dir.glob(f".*{PART_MARKER}*"):
            leftover.unlink(missing_ok=True)


def build_release(
    catalog_path: Path,
    out_dir: Path,
    config: ServiceConfig | None = None,
    release: str | None = None,
    on_outcome: Callable[[FetchOutcome], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    seed: int | None = None,
) -> BuildSummary:
    """Download every cutout the coordinate list asks for into ``out_dir`` and write its catalog and manifest.

    ``on_plan(n_pending, n_present)`` is called once the existing files are checked; ``on_outcome`` after each
    object (skipped ones included). Interrupting the call (Ctrl-C, a kill) leaves only whole images and no
    manifest; calling it again resumes.
    """
    started = time.perf_counter()
    config = config or ServiceConfig()
    out_dir = Path(out_dir)
    release = release or out_dir.resolve().name
    if not is_valid_release_name(release):  # the release loader's rule: the name becomes a partition key
        raise CoordinateCatalogError(f"release name {release!r}: {RELEASE_NAME_RULE}")
    requests, rejected = read_coordinate_catalog(catalog_path)
    images_dir = out_dir / IMAGES
    images_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(images_dir)

    on_disk = [r for r in requests if (out_dir / r.image).is_file()]
    with ThreadPoolExecutor(max_workers=config.concurrency) as checker:
        # Every file present is decoded again: a resume must not trust a file an earlier tool left damaged.
        verdicts = list(checker.map(lambda r: existing_cutout_is_valid(out_dir / r.image, config.size), on_disk))
    present = [r for r, valid in zip(on_disk, verdicts) if valid]
    present_ids = {r.object_id for r in present}
    pending = [r for r in requests if r.object_id not in present_ids]
    if pending:
        # The folder is incomplete from here until the manifest is written again.
        (out_dir / MANIFEST).unlink(missing_ok=True)
    if on_plan:
        on_plan(len(pending), len(present))

    outcomes: dict[str, FetchOutcome] = {}
    for request in present:
        outcomes[request.object_id] = FetchOutcome(request, "skipped")
        if on_outcome:
            on_outcome(outcomes[request.object_id])

    request_count = 0
    count_lock = threading.Lock()

    def count_request() -> None:
        nonlocal request_count
        with count_lock:
            request_count += 1

    pause = ServicePause()
    stop = threading.Event()
    master_rng = random.Random(seed)
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    headers = {"User-Agent": "aion_assets-from-coords/0.1"}
    with httpx.Client(timeout=config.timeout_s, limits=limits, headers=headers, follow_redirects=True) as client:
        executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="cutout")
        try:
            futures: set[Future[FetchOutcome]] = {
                executor.submit(fetch_cutout, client, request, out_dir, config, pause,
                                random.Random(master_rng.random()), count_request, stop)
                for request in pending
            }
            while futures:
                done, futures = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    outcomes[outcome.request.object_id] = outcome
                    if on_outcome:
                        on_outcome(outcome)
        except BaseException:
            # Ctrl-C or an error: drop what has not started, end retries; what is in flight finishes or times out.
            stop.set()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)

    accepted = [r for r in requests if outcomes[r.object_id].status in ("downloaded", "skipped")]
    failures = [(o.request, o.reason or "unknown") for o in outcomes.values() if o.status == "failed"]
    failed_rows: list[list[object]] = [
        [row.object_id, row.ra, row.dec, row.reason] for row in rejected
    ] + [[request.object_id, repr(request.ra), repr(request.dec), reason] for request, reason in failures]

    _write_if_changed(catalog_bytes(accepted), out_dir / CATALOG)
    if failed_rows:
        _write_if_changed(_csv_bytes(["object_id", "ra", "dec", "reason"], failed_rows), out_dir / FAILED)
    else:
        (out_dir / FAILED).unlink(missing_ok=True)
    manifest_written = bool(accepted)
    if manifest_written:
        manifest = manifest_for(release, config, len(accepted), len(failed_rows))
        _write_if_changed((json.dumps(manifest, indent=2) + "\n").encode(), out_dir / MANIFEST)
    else:
        (out_dir / MANIFEST).unlink(missing_ok=True)

    return BuildSummary(
        release=release,
        out_dir=out_dir,
        requested=len(requests),
        downloaded=sum(1 for o in outcomes.values() if o.status == "downloaded"),
        skipped=len(present),
        failed=[(str(row.object_id or f"row {row.row}"), row.reason) for row in rejected]
        + [(request.object_id, reason) for request, reason in failures],
        http_requests=request_count,
        bytes_downloaded=sum(o.n_bytes for o in outcomes.values()),
        seconds=time.perf_counter() - started,
        manifest_written=manifest_written,
    )
