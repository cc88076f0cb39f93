"""Survey releases in the watched folder: discovery, validation, fingerprints and shard planning. Pure (no dagster).

A release is a folder with ``manifest.json`` (must name its ``release``), a catalog (``catalog.csv`` or
``catalog.parquet``: ``object_id``, ``image``, optional ``ra``/``dec``, every other column a label) and its cutouts.
An HDF5 release names its file in the manifest (``"hdf5": "cutouts.h5"``); its catalog is then optional (the file's
own object_id/ra/dec are the catalog) and, when present, needs no ``image`` column.

The sensor, the daily schedule and the CLI all plan through :func:`plan_release_updates`, so they agree on which
partitions exist and which need a run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from aion_assets.cutouts.readers import CutoutRejected, hdf5_index, parse_bands
from aion_assets.platform.layout import RELEASE_NAME_RULE, ShardKey, is_valid_release_name
from aion_assets.platform.settings import DEFAULT_SHARD_SIZE as DEFAULT_SHARD_SIZE  # re-exported
from aion_assets.platform.settings import get_settings

MANIFEST = "manifest.json"
CATALOG_NAMES = ("catalog.csv", "catalog.parquet")
RESERVED_COLUMNS = ("object_id", "image", "ra", "dec")


class ReleaseError(ValueError):
    """A release that cannot be ingested as a whole (broken manifest or catalog)."""

    def __init__(self, release: str, reason: str) -> None:
        super().__init__(f"release {release!r}: {reason}")
        self.release = release
        self.reason = reason


@dataclass
class Release:
    name: str
    path: Path
    manifest: dict
    catalog_file: str | None  # file name inside the release folder; None for an HDF5 release without a catalog
    n_objects: int
    bands: list[str] | None  # flux bands the manifest promises (None: whatever the files carry)
    hdf5: str | None
    label_columns: list[str]
    fingerprint: str

    def shard_keys(self, shard_size: int | None = None) -> list[str]:
        return shard_keys(self.name, self.n_objects, shard_size or env_shard_size())


@dataclass
class SkippedRelease:
    folder: str
    reason: str
    release: str | None = None  # the name it claims, when its manifest names one (else the folder's name)


@dataclass
class PlannedRun:
    partition_key: str
    run_key: str  # "<key>:<fingerprint>": a run per content version, never twice for the same one
    fingerprint: str


@dataclass
class ReleasePlan:
    releases: list[Release] = field(default_factory=list)
    add_keys: list[str] = field(default_factory=list)  # partitions that do not exist yet
    runs: list[PlannedRun] = field(default_factory=list)  # partitions whose content is new or changed
    skipped: list[SkippedRelease] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)  # partition key -> fingerprint, every valid shard

    @property
    def all_keys(self) -> list[str]:
        return sorted(self.fingerprints)

    @property
    def present_names(self) -> set[str]:
        """Every release a folder in the watched folder still holds, broken ones included: a broken release is
        waiting for a repair, not gone."""
        names = {release.name for release in self.releases}
        for skipped in self.skipped:
            names |= {skipped.folder, skipped.release or skipped.folder}
        return names


# -- configuration -------------------------------------------------------------------------------------------------
def env_shard_size() -> int:
    """AION_SHARD_SIZE through the settings (default DEFAULT_SHARD_SIZE, which lives there with the setting); a
    bad value is a SettingsError, a ValueError naming the variable."""
    return get_settings().shard_size


def shard_keys(release: str, n_objects: int, shard_size: int) -> list[str]:
    return [str(ShardKey(release, f"{i:04d}")) for i in range(math.ceil(n_objects / shard_size))]


def shard_bounds(shard_index: int, shard_size: int, n_objects: int) -> tuple[int, int]:
    start = shard_index * shard_size
    return start, min(start + shard_size, n_objects)


# -- discovery and validation ----------------------------------------------------------------------------------------
def discover_release_dirs(root: Path | None) -> list[Path]:
    """Every direct subfolder holding a manifest.json, in name order."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def load_manifest(release_dir: Path) -> dict:
    path = release_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ReleaseError(release_dir.name, "manifest.json is missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReleaseError(release_dir.name, f"manifest.json does not parse: {error}") from error
    if not isinstance(manifest, dict):
        raise ReleaseError(release_dir.name, "manifest.json must hold a JSON object")
    name = manifest.get("release")
    if not isinstance(name, str) or not name.strip():
        raise ReleaseError(release_dir.name, "manifest.json has no 'release' name")
    if not is_valid_release_name(name):
        raise ReleaseError(name, RELEASE_NAME_RULE)
    return manifest


def catalog_path(release_dir: Path) -> Path | None:
    for name in CATALOG_NAMES:
        if (release_dir / name).is_file():
            return release_dir / name
    return None


def read_catalog(release_dir: Path, manifest: dict | None = None) -> pl.DataFrame:
    """The catalog with every column as a string (ids like SDSS objids must never pass through float).

    An HDF5 release without a catalog file gets one from the file itself (object_id, ra, dec).
    """
    manifest = manifest if manifest is not None else load_manifest(release_dir)
    name = manifest["release"]
    path = catalog_path(release_dir)
    hdf5 = manifest.get("hdf5")
    if path is None:
        if not hdf5:
            raise ReleaseError(name, "no catalog.csv or catalog.parquet")
        try:
            ids, ras, decs, _, _ = hdf5_index(_hdf5_path(release_dir, name, hdf5))
        except CutoutRejected as error:
            raise ReleaseError(name, error.reason) from error
        return pl.DataFrame({
            "object_id": ids,
            "ra": [None if v is None else repr(v) for v in ras],
            "dec": [None if v is None else repr(v) for v in decs],
        }, schema={"object_id": pl.String, "ra": pl.String, "dec": pl.String})
    try:
        if path.suffix == ".csv":
            catalog = pl.read_csv(path, infer_schema_length=0)
        else:
            catalog = pl.read_parquet(path)
            catalog = catalog.with_columns(pl.all().cast(pl.String))
    except Exception as error:  # polars raises several types on malformed files
        raise ReleaseError(name, f"{path.name} does not parse: {type(error).__name__}: {error}") from error
    catalog = catalog.rename({c: c.strip() for c in catalog.columns})
    required = ["object_id"] if hdf5 else ["object_id", "image"]
    missing = [c for c in required if c not in catalog.columns]
    if missing:
        raise ReleaseError(name, f"{path.name} lacks required column(s) {', '.join(missing)} "
                                 f"(has: {', '.join(catalog.columns)})")
    return catalog


def _hdf5_path(release_dir: Path, release: str, hdf5: str) -> Path:
    root = release_dir.resolve()
    path = (root / hdf5).resolve()
    if not path.is_relative_to(root):
        raise ReleaseError(release, f"manifest 'hdf5' path {hdf5!r} escapes the release folder")
    if not path.is_file():
        raise ReleaseError(release, f"HDF5 file {hdf5!r} named in the manifest is missing")
    return path


def hdf5_file(release: Release) -> Path:
    assert release.hdf5 is not None
    return _hdf5_path(release.path, release.name, release.hdf5)


def release_fingerprint(release_dir: Path, shard_size: int) -> str:
    """Hash of the manifest and catalog bytes plus every other file's name, size and mtime.

    Cheap (one stat per file, no image read) yet changes whenever a file is added, removed or rewritten. The
    shard size takes part because it changes which rows each partition holds.
    """
    digest = hashlib.sha256(f"shard_size={shard_size}\n".encode())
    entries: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(release_dir):
        dirnames.sort()
        for filename in filenames:
            full = Path(dirpath) / filename
            relative = full.relative_to(release_dir).as_posix()
            if relative == MANIFEST or relative in CATALOG_NAMES:
                continue
            try:
                stat = full.stat()
            except OSError:  # a dangling symlink: its name still counts
                entries.append((relative, -1, -1))
                continue
            entries.append((relative, stat.st_size, stat.st_mtime_ns))
    for name in (MANIFEST, *CATALOG_NAMES):
        path = release_dir / name
        digest.update(f"{name}\0".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    for relative, size, mtime in sorted(entries):
        digest.update(f"{relative}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:16]


def load_release(release_dir: Path, shard_size: int | None = None) -> Release:
    """Validate a release folder (manifest and catalog; no image read) or raise :class:`ReleaseError`."""
    release_dir = Path(release_dir)
    shard_size = shard_size or env_shard_size()
    manifest = load_manifest(release_dir)
    name = manifest["release"]
    hdf5 = manifest.get("hdf5")
    if hdf5 is not None and not isinstance(hdf5, str):
        raise ReleaseError(name, "manifest 'hdf5' must be a file name")
    if hdf5:
        _hdf5_path(release_dir, name, hdf5)
    catalog = read_catalog(release_dir, manifest)
    if catalog.height == 0:
        raise ReleaseError(name, "catalog has no rows")
    path = catalog_path(release_dir)
    return Release(
        name=name,
        path=release_dir,
        manifest=manifest,
        catalog_file=path.name if path else None,
        n_objects=catalog.height,
        bands=parse_bands(manifest.get("bands")),
        hdf5=hdf5 or None,
        label_columns=[c for c in catalog.columns if c not in RESERVED_COLUMNS],
        fingerprint=release_fingerprint(release_dir, shard_size),
    )


def find_release_dir(root: Path | None, release: str) -> Path:
    """The folder whose manifest names ``release`` (usually the folder of that name)."""
    if root is None:
        raise ReleaseError(release, "no watched folder configured (set AION_RELEASES_DIR)")
    direct = Path(root) / release
    if (direct / MANIFEST).is_file():
        try:
            if load_manifest(direct)["release"] == release:
                return direct
        except ReleaseError:
            return direct  # the folder is this release's; let the caller report how it is broken
    for candidate in discover_release_dirs(Path(root)):
        try:
            if load_manifest(candidate)["release"] == release:
                return candidate
        except ReleaseError:
            continue
    raise ReleaseError(release, f"no folder in {root} holds this release any more")


# -- planning --------------------------------------------------------------------------------------------------------
def plan_release_updates(
    releases_dir: Path | None,
    known: dict[str, str],
    existing_keys: set[str] | None = None,
    shard_size: int | None = None,
) -> ReleasePlan:
    """What the watched folder asks for, given what has been requested or ingested before.

    ``known`` maps partition keys (or whole release names) to the release fingerprint they were last requested
    (sensor cursor) or ingested (lake) with; ``existing_keys`` are the dynamic partitions that already exist.
    A broken release is skipped with its reason and contributes nothing; the others go on. Two folders claiming
    one release name: the first (by folder name) wins and the other is skipped.
    """
    shard_size = shard_size or env_shard_size()
    existing = existing_keys or set()
    plan = ReleasePlan()
    seen: dict[str, str] = {}
    for folder in discover_release_dirs(releases_dir):
        try:
            release = load_release(folder, shard_size)
        except ReleaseError as error:
            plan.skipped.append(SkippedRelease(folder.name, str(error), error.release))
            continue
        if release.name in seen:
            plan.skipped.append(SkippedRelease(
                folder.name, f"release {release.name!r} is already provided by folder {seen[release.name]!r}",
                release.name))
            continue
        seen[release.name] = folder.name
        plan.releases.append(release)
        for key in release.shard_keys(shard_size):
            plan.fingerprints[key] = release.fingerprint
            if key not in existing:
                plan.add_keys.append(key)
            if known.get(key, known.get(release.name)) != release.fingerprint:
                plan.runs.append(PlannedRun(key, f"{key}:{release.fingerprint}", release.fingerprint))
    return plan
