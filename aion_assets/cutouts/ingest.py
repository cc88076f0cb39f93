"""Ingest one shard of a release into canonical arrays and tables, and write it to the lake. Pure (no dagster).

Every catalog row of the shard ends either in the shard (row-aligned arrays + a ``cutouts`` row) or in the
``quarantine`` table with its reason: nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from aion_assets.cutouts.readers import (
    CANONICAL_SIZE,
    FLUX_RENDERING,
    CutoutRejected,
    DecodedCutout,
    decode_file,
    decode_flux_array,
    hdf5_index,
    read_source,
    resolve_inside,
)
from aion_assets.cutouts.releases import Release, ReleaseError, hdf5_file, read_catalog, shard_bounds
from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey, shard_dir
from aion_assets.platform.warehouse import Warehouse, partition_path

HEALPIX_NSIDE = 1024
DECODE_WORKERS = 2
RELEASE_LEVEL_SHARD = "_release"  # quarantine partition for rows about a whole release (broken manifest/catalog)

UTC_TIME = pl.Datetime("us", "UTC")
OBJECTS_SCHEMA = {
    "object_id": pl.String, "release": pl.String, "shard": pl.String, "row": pl.Int32,
    "ra": pl.Float64, "dec": pl.Float64, "bands": pl.String, "sha256": pl.String,
}
CUTOUTS_SCHEMA = {
    "object_id": pl.String, "release": pl.String, "shard": pl.String, "row": pl.Int32,
    "ra": pl.Float64, "dec": pl.Float64, "healpix": pl.Int64, "source_path": pl.String,
    "width": pl.Int32, "height": pl.Int32, "bands": pl.String, "sha256": pl.String, "ingested_at": UTC_TIME,
}
LABELS_SCHEMA = {
    "object_id": pl.String, "release": pl.String, "name": pl.String, "value": pl.String, "value_num": pl.Float64,
}
QUARANTINE_SCHEMA = {
    "release": pl.String, "shard": pl.String, "object_id": pl.String, "source_path": pl.String,
    "reason": pl.String, "seen_at": UTC_TIME,
}


@dataclass
class ShardResult:
    release: str
    shard: str
    rgb: np.ndarray  # uint8 [N, 160, 160, 3]
    flux: np.ndarray | None  # float32 [N, C, 160, 160]
    objects: pl.DataFrame
    cutouts: pl.DataFrame
    labels: pl.DataFrame
    quarantine: pl.DataFrame
    catalog_rows: int  # rows of the catalog this shard covers (accepted + quarantined)
    bytes_read: int
    seconds: float
    fingerprint: str = ""

    @property
    def shard_key(self) -> ShardKey:
        return ShardKey(self.release, self.shard)

    @property
    def partition_key(self) -> str:
        return str(self.shard_key)

    @property
    def n_accepted(self) -> int:
        return self.cutouts.height

    @property
    def n_quarantined(self) -> int:
        return self.quarantine.height

    @property
    def data_version(self) -> str:
        """Hash of the accepted sources' hashes (and their order): changes exactly when the shard's data does."""
        digest = hashlib.sha256()
        for object_id, sha in zip(self.cutouts["object_id"], self.cutouts["sha256"]):
            digest.update(f"{object_id}\0{sha}\n".encode())
        return digest.hexdigest()[:32]


@dataclass
class _Candidate:
    catalog_row: int
    object_id: str
    source_path: str | None
    ra: float | None
    dec: float | None
    labels: dict[str, str | None]
    hdf5_row: int | None = None
    # filled by decoding
    decoded: DecodedCutout | None = None
    sha256: str = ""
    size: int = 0
    reason: str | None = None


@dataclass
class _Rejection:
    object_id: str | None
    source_path: str | None
    reason: str


def _parse_coordinate(text: str | None, name: str, low: float, high: float) -> float | None:
    if text is None or not str(text).strip():
        return None
    value = float(str(text).strip())  # ValueError -> caller quarantines the row
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name}={text} outside [{low}, {high}]")
    return value


def healpix_nested(ra: list[float | None], dec: list[float | None], nside: int = HEALPIX_NSIDE) -> list[int | None]:
    """Nested HEALPix index per object; None where the coordinates are unknown."""
    known = [i for i, (a, d) in enumerate(zip(ra, dec)) if a is not None and d is not None]
    result: list[int | None] = [None] * len(ra)
    if not known:
        return result
    import astropy.units as u
    from astropy_healpix import HEALPix

    grid = HEALPix(nside=nside, order="nested")
    pixels = grid.lonlat_to_healpix(
        np.array([ra[i] for i in known]) * u.deg, np.array([dec[i] for i in known]) * u.deg)
    for i, pixel in zip(known, np.atleast_1d(pixels)):
        result[i] = int(pixel)
    return result


def _decode_file_candidate(release: Release, candidate: _Candidate) -> _Candidate:
    try:
        path = resolve_inside(release.path, candidate.source_path or "")
        data = read_source(path)  # refuses a file over the byte budget before reading it
        candidate.size = len(data)
        candidate.sha256 = hashlib.sha256(data).hexdigest()
        candidate.decoded = decode_file(data, path.name, release.bands)
    except CutoutRejected as rejected:
        candidate.reason = rejected.reason
    except OSError as error:
        candidate.reason = f"unreadable file: {type(error).__name__}: {error}"
    return candidate


def _hdf5_decoder(release: Release) -> tuple[Callable[[_Candidate], _Candidate], Callable[[], None], list[str] | None]:
    import h5py

    path = hdf5_file(release)
    _, _, _, file_bands, _ = hdf5_index(path)
    handle = h5py.File(path, "r")
    images = handle["image_array"]

    def decode(candidate: _Candidate) -> _Candidate:
        try:
            assert candidate.hdf5_row is not None
            flux = np.asarray(images[candidate.hdf5_row], dtype=np.float32)  # h5py serialises reads itself
            raw = flux.tobytes()
            candidate.size = len(raw)
            # One file holds many objects, so the hash is of the object's own stored array.
            candidate.sha256 = hashlib.sha256(raw).hexdigest()
            candidate.decoded = decode_flux_array(flux, file_bands, release.bands)
        except CutoutRejected as rejected:
            candidate.reason = rejected.reason
        except Exception as error:  # a damaged chunk surfaces as an h5py/OSError on read
            candidate.reason = f"does not decode: {type(error).__name__}: {error}"
        return candidate

    return decode, handle.close, file_bands


def ingest_shard(
    release_dir: Path,
    release_meta: Release,
    shard_index: int,
    shard_size: int,
    now: datetime | None = None,
    workers: int = DECODE_WORKERS,
) -> ShardResult:
    """Validate and decode every catalog row of one shard."""
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    release = release_meta
    release.path = Path(release_dir)
    shard = f"{shard_index:04d}"
    catalog = read_catalog(release.path, release.manifest)
    # Duplicates are judged over the whole catalog, so a repeat in a later shard is caught too: first one wins.
    catalog = catalog.with_row_index("catalog_row").with_columns(
        first_of_id=pl.col("object_id").is_first_distinct(),
    )
    first_row = dict(catalog.filter(pl.col("first_of_id")).select("object_id", "catalog_row").iter_rows())
    start, stop = shard_bounds(shard_index, shard_size, catalog.height)
    rows = catalog.slice(start, max(stop - start, 0))

    hdf5_rows: dict[str, int] = {}
    file_ra: list[float | None] = []
    file_dec: list[float | None] = []
    if release.hdf5:
        try:
            ids, file_ra, file_dec, _, _ = hdf5_index(hdf5_file(release))
        except CutoutRejected as error:
            raise ReleaseError(release.name, error.reason) from error
        for index, object_id in enumerate(ids):
            hdf5_rows.setdefault(object_id, index)

    rejections: list[_Rejection] = []
    candidates: list[_Candidate] = []
    for record in rows.iter_rows(named=True):
        object_id = (record.get("object_id") or "").strip()
        source = record.get("image")
        if release.hdf5 and not source:
            source = f"{release.hdf5}#{hdf5_rows[object_id]}" if object_id in hdf5_rows else release.hdf5
        if not object_id:
            rejections.append(_Rejection(None, source, f"catalog row {record['catalog_row']} has an empty object_id"))
            continue
        if not record["first_of_id"]:
            rejections.append(_Rejection(
                object_id, source, f"duplicate object_id (first at catalog row {first_row[record['object_id']]})"))
            continue
        try:
            ra = _parse_coordinate(record.get("ra"), "ra", 0.0, 360.0)
            dec = _parse_coordinate(record.get("dec"), "dec", -90.0, 90.0)
        except ValueError as error:
            rejections.append(_Rejection(object_id, source, f"invalid coordinates: {error}"))
            continue
        candidate = _Candidate(
            catalog_row=record["catalog_row"], object_id=object_id, source_path=source, ra=ra, dec=dec,
            labels={c: record.get(c) for c in release.label_columns},
        )
        if release.hdf5:
            if object_id not in hdf5_rows:
                rejections.append(_Rejection(object_id, source, f"object_id not found in {release.hdf5}"))
                continue
            candidate.hdf5_row = hdf5_rows[object_id]
            if ra is None and dec is None:  # coordinates from the file when the catalog has none
                candidate.ra, candidate.dec = file_ra[candidate.hdf5_row], file_dec[candidate.hdf5_row]
        candidates.append(candidate)

    if release.hdf5:
        decode, close, _ = _hdf5_decoder(release)
    else:
        def decode(candidate: _Candidate) -> _Candidate:
            return _decode_file_candidate(release, candidate)

        def close() -> None:
            return None
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            decoded = list(pool.map(decode, candidates))
    finally:
        close()

    # Arrays must be row-aligned and of one layout: the first accepted object (catalog order) sets the shard's
    # band layout, a later object with another layout is quarantined rather than padded or guessed.
    accepted: list[_Candidate] = []
    layout: tuple[str, bool] | None = None
    bytes_read = 0
    for candidate in decoded:
        bytes_read += candidate.size
        if candidate.reason is not None or candidate.decoded is None:
            rejections.append(_Rejection(candidate.object_id, candidate.source_path, candidate.reason or "unknown"))
            continue
        this_layout = (candidate.decoded.bands, candidate.decoded.flux is not None)
        if layout is None:
            layout = this_layout
        elif this_layout != layout:
            rejections.append(_Rejection(
                candidate.object_id, candidate.source_path,
                f"wrong bands: {this_layout[0]} where this shard holds {layout[0]}"))
            continue
        accepted.append(candidate)

    rgb = (np.stack([c.decoded.rgb for c in accepted]) if accepted
           else np.zeros((0, CANONICAL_SIZE, CANONICAL_SIZE, 3), dtype=np.uint8))
    flux = None
    if layout is not None and layout[1]:
        flux = np.stack([c.decoded.flux for c in accepted]).astype(np.float32, copy=False)

    ra = [c.ra for c in accepted]
    dec = [c.dec for c in accepted]
    base = {
        "object_id": [c.object_id for c in accepted],
        "release": [release.name] * len(accepted),
        "shard": [shard] * len(accepted),
        "row": list(range(len(accepted))),
        "ra": ra,
        "dec": dec,
    }
    objects = pl.DataFrame({
        **base, "bands": [c.decoded.bands for c in accepted], "sha256": [c.sha256 for c in accepted],
    }, schema=OBJECTS_SCHEMA)
    cutouts = pl.DataFrame({
        **base,
        "healpix": healpix_nested(ra, dec),
        "source_path": [c.source_path for c in accepted],
        "width": [c.decoded.width for c in accepted],
        "height": [c.decoded.height for c in accepted],
        "bands": [c.decoded.bands for c in accepted],
        "sha256": [c.sha256 for c in accepted],
        "ingested_at": [now] * len(accepted),
    }, schema=CUTOUTS_SCHEMA)
    labels = _labels_frame(release, accepted)
    quarantine = pl.DataFrame({
        "release": [release.name] * len(rejections),
        "shard": [shard] * len(rejections),
        "object_id": [r.object_id for r in rejections],
        "source_path": [r.source_path for r in rejections],
        "reason": [r.reason for r in rejections],
        "seen_at": [now] * len(rejections),
    }, schema=QUARANTINE_SCHEMA)
    return ShardResult(
        release=release.name, shard=shard, rgb=rgb, flux=flux, objects=objects, cutouts=cutouts, labels=labels,
        quarantine=quarantine, catalog_rows=rows.height, bytes_read=bytes_read,
        seconds=time.perf_counter() - started, fingerprint=release.fingerprint,
    )


def _labels_frame(release: Release, accepted: list[_Candidate]) -> pl.DataFrame:
    """Long format, one row per (object, label column) with a value; numeric labels also as float."""
    if not release.label_columns or not accepted:
        return pl.DataFrame(schema=LABELS_SCHEMA)
    wide = pl.DataFrame(
        {"object_id": [c.object_id for c in accepted],
         **{name: [c.labels.get(name) for c in accepted] for name in release.label_columns}},
        schema={"object_id": pl.String, **{name: pl.String for name in release.label_columns}},
    )
    return (
        wide.unpivot(index="object_id", variable_name="name", value_name="value")
        .filter(pl.col("value").is_not_null() & (pl.col("value").str.strip_chars() != ""))
        .with_columns(
            release=pl.lit(release.name, dtype=pl.String),
            value_num=pl.col("value").str.strip_chars().cast(pl.Float64, strict=False),
        )
        .with_columns(value_num=pl.when(pl.col("value_num").is_finite()).then(pl.col("value_num")))
        .select(list(LABELS_SCHEMA))
        .cast(LABELS_SCHEMA)
    )


# -- writing -----------------------------------------------------------------------------------------------------
def write_shard(lake: Lake, warehouse: Warehouse, result: ShardResult) -> dict[str, int]:
    """Arrays first, tables last, the completion marker at the very end.

    Every file is replaced atomically and the tables are one file per partition, so re-writing a partition
    replaces exactly its rows, and a run that dies before the tables leaves the previous tables whole.
    """
    folder = shard_dir(result.release, result.shard)
    written: dict[str, int] = {}
    lake.write_array(result.rgb, *folder, "rgb.npy")
    written["rgb.npy"] = lake.size_bytes(*folder, "rgb.npy")
    if result.flux is not None:
        lake.write_array(result.flux, *folder, "flux.npy")
        written["flux.npy"] = lake.size_bytes(*folder, "flux.npy")
    else:
        lake.delete(*folder, "flux.npy")  # a previous version may have had flux; rows must not mismatch
    lake.write_parquet(result.objects, *folder, "objects.parquet")
    key = result.partition_key
    warehouse.write_lake_partition("cutouts", key, result.cutouts)
    warehouse.write_lake_partition("labels", key, result.labels)
    warehouse.write_lake_partition("quarantine", key, result.quarantine)
    marker = {
        "release": result.release, "shard": result.shard, "fingerprint": result.fingerprint,
        "data_version": result.data_version, "accepted": result.n_accepted, "quarantined": result.n_quarantined,
        "catalog_rows": result.catalog_rows, "written_at": datetime.now(timezone.utc).isoformat(),
        # rgb.npy of a flux shard is rendered from the flux: which rendering made it (RGB sources are not rendered).
        "flux_rendering": FLUX_RENDERING if result.flux is not None else None,
    }
    lake.write_bytes(json.dumps(marker, indent=2).encode(), *folder, "ingest.json")
    return written


def ingested_fingerprints(lake: Lake) -> dict[str, str]:
    """Partition key -> fingerprint of every completely written shard at today's rendering (from the markers).

    A flux shard whose rgb.npy was rendered under other parameters is left out, so that it is planned again: every
    object of every shard must look the same to the encoder, the describer and the galleries.
    """
    known: dict[str, str] = {}
    for relative in lake.iter_files("cutouts/*/*/ingest.json"):
        try:
            marker = json.loads(lake.read_bytes(relative))
            key = ShardKey(marker["release"], marker["shard"])
            rendered_from_flux = lake.exists(*shard_dir(key.release, key.shard), "flux.npy")
            if rendered_from_flux and marker.get("flux_rendering") != FLUX_RENDERING:
                continue
            known[str(key)] = marker["fingerprint"]
        except (ValueError, KeyError, OSError):
            continue  # an unreadable marker means "not known": the shard is planned again
    return known


def record_release_rejection(warehouse: Warehouse, release: str, source_path: str | None, reason: str) -> None:
    """A quarantine row for a whole release that cannot be ingested (broken manifest or catalog)."""
    frame = pl.DataFrame({
        "release": [release], "shard": [None], "object_id": [None], "source_path": [source_path],
        "reason": [reason], "seen_at": [datetime.now(timezone.utc)],
    }, schema=QUARANTINE_SCHEMA)
    warehouse.write_lake_partition("quarantine", str(ShardKey(release, RELEASE_LEVEL_SHARD)), frame)


def clear_release_rejection(warehouse: Warehouse, release: str) -> None:
    key = str(ShardKey(release, RELEASE_LEVEL_SHARD))
    if warehouse.lake.exists(*partition_path("quarantine", key)):
        warehouse.delete_lake_partition("quarantine", key)


def quarantine_summary_markdown(quarantine: pl.DataFrame, limit: int = 10) -> str:
    """Reasons and their counts, plus a few examples, for the materialization's metadata."""
    if quarantine.is_empty():
        return "nothing quarantined"
    # Group on the reason's stem so "missing file 'a.jpg'" and "missing file 'b.jpg'" count together.
    stems = quarantine.with_columns(kind=pl.col("reason").str.replace(r"[:(].*$", "").str.strip_chars())
    counts = stems.group_by("kind").agg(n=pl.len(), example=pl.col("reason").first()).sort("n", descending=True)
    lines = ["| reason | count | example |", "| --- | ---: | --- |"]
    for kind, n, example in counts.head(limit).iter_rows():
        lines.append(f"| {kind} | {n} | {str(example).replace('|', '/')[:120]} |")
    return "\n".join(lines)


# -- consistency (what the asset checks assert) ----------------------------------------------------------------
@dataclass
class CountBalance:
    cutouts: int
    quarantined: int
    catalog_rows: int
    message: str

    @property
    def passed(self) -> bool:
        return self.cutouts + self.quarantined == self.catalog_rows


def _partition_rows(lake: Lake, table: str, partition_key: str) -> pl.DataFrame | None:
    parts = partition_path(table, partition_key)
    return lake.read_parquet(*parts) if lake.exists(*parts) else None


def count_balance(lake: Lake, releases_root: Path | None, partition_key: str) -> CountBalance:
    """Rows of one shard in `cutouts` + object-level `quarantine` against the catalog rows the shard covers."""
    from aion_assets.cutouts.releases import env_shard_size, find_release_dir

    key = ShardKey.parse(partition_key)
    cutouts = _partition_rows(lake, "cutouts", partition_key)
    quarantine = _partition_rows(lake, "quarantine", partition_key)
    n_cutouts = 0 if cutouts is None else cutouts.height
    # Release-level rows (shard null) live in their own partition; filter anyway so the count is objects only.
    n_quarantined = 0 if quarantine is None else quarantine.filter(pl.col("shard").is_not_null()).height
    try:
        folder = find_release_dir(releases_root, key.release)
        catalog = read_catalog(folder)
    except ReleaseError as error:
        return CountBalance(n_cutouts, n_quarantined, -1, f"catalog unreadable: {error.reason}")
    start, stop = shard_bounds(int(key.shard), env_shard_size(), catalog.height)
    expected = max(stop - start, 0)
    verdict = "==" if n_cutouts + n_quarantined == expected else "!="
    return CountBalance(
        n_cutouts, n_quarantined, expected,
        f"{n_cutouts} cutouts + {n_quarantined} quarantined {verdict} {expected} catalog rows of {partition_key}",
    )


def duplicate_ids(lake: Lake, release: str) -> pl.DataFrame:
    """object_id values seen more than once across every shard of a release in `cutouts` (object_id, count)."""
    frames = [lake.read_parquet(rel).select("object_id")
              for rel in lake.iter_files(f"tables/cutouts/{release}/*.parquet")]
    if not frames:
        return pl.DataFrame(schema={"object_id": pl.String, "count": pl.UInt32})
    ids = pl.concat(frames)
    return ids.group_by("object_id").agg(count=pl.len()).filter(pl.col("count") > 1).sort("object_id")


def materialized_shards(lake: Lake, release: str | None = None) -> list[str]:
    """Partition keys with a `cutouts` file in the lake (one release, or all)."""
    pattern = f"tables/cutouts/{release}/*.parquet" if release else "tables/cutouts/*/*.parquet"
    keys = []
    for relative in lake.iter_files(pattern):
        *_, name, leaf = relative.split("/")  # a lake path (tables/cutouts/<release>/<shard>.parquet), not a key
        keys.append(str(ShardKey(name, leaf.removesuffix(".parquet"))))
    return sorted(keys)
