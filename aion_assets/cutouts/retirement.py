"""Retiring a release whose folder vanished from the watched folder: its lake files are kept, never served.

Everything a release contributed to the lake lives in folders named after it (see platform/layout.py and
warehouse.partition_path): its rows of every lake table (``tables/<table>/<release>/``), its canonical arrays
(``cutouts/<release>/``) and the per-shard embeddings (``embeddings/image_base/<encoder>/<release>/``,
``embeddings/search/<version>/<release>/``). Retiring moves those folders, unchanged, to
``retired/<release>/<UTC time>/<the same relative path>``, beside a ``retired.json`` that says when and why.

Moving them out of ``tables/`` is what hides the rows: the DuckDB views (`cutouts`, `labels`, `quarantine`) read
``tables/<table>/**/*.parquet``, and everything downstream (search_index, image_similarity_index, the
evaluation pools, the training pairs) reads the `cutouts` view, so the next build of those assets leaves the
release out. Moving out of ``cutouts/`` drops its completion markers, so a release that comes back is ingested
again. Pure (no dagster).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone

import fsspec

from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse

RETIRED_ROOT = "retired"
RETIREMENT_RECORD = "retired.json"
# Folders named after the release, relative to the lake root; "{release}" is filled in (release names hold no
# glob characters: platform/layout.py's RELEASE_NAME).
RELEASE_FOLDER_PATTERNS = (
    "tables/*/{release}",
    "cutouts/{release}",
    "embeddings/image_base/*/{release}",
    "embeddings/search/*/{release}",
    "indexes/search_build/*/shards/{release}",
)


@dataclass
class RetiredRelease:
    release: str
    partition_keys: list[str]  # the dynamic partitions removed from the instance
    moved: list[str]  # lake-relative folders that were moved
    destination: str  # lake-relative folder they now live under
    location: str  # the same folder as a full path or URL, for people

    def report_line(self, releases_dir: object) -> str:
        return (f"retired release {self.release!r}: its folder is gone from {releases_dir}; "
                f"{len(self.partition_keys)} partition(s) removed, {len(self.moved)} lake folder(s) kept under "
                f"{self.location} (no longer in the cutouts, labels or quarantine views)")


def releases_in_lake(lake: Lake) -> set[str]:
    """Releases that have rows in a lake table or canonical arrays: what could still be served."""
    names = {relative.split("/")[2] for relative in lake.iter_files("tables/*/*/*.parquet")}
    names |= {relative.split("/")[1] for relative in lake.iter_files("cutouts/*/*/*")}
    return names


def _release_folders(lake: Lake, fs: fsspec.AbstractFileSystem, release: str) -> list[str]:
    found: list[str] = []
    for pattern in RELEASE_FOLDER_PATTERNS:
        found += [relative for relative in lake.iter_files(pattern.format(release=release))
                  if fs.isdir(lake.path(relative))]
    return sorted(found)


def _free_destination(lake: Lake, release: str, now: datetime) -> str:
    """``retired/<release>/<UTC time>``; a second retirement within the same second gets a suffix."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    destination, attempt = posixpath.join(RETIRED_ROOT, release, stamp), 1
    while lake.exists(destination):
        attempt += 1
        destination = posixpath.join(RETIRED_ROOT, release, f"{stamp}-{attempt}")
    return destination


def retire_release_files(
    lake: Lake, warehouse: Warehouse, release: str, partition_keys: list[str], reason: str,
    now: datetime | None = None,
) -> RetiredRelease:
    """Move every lake folder of ``release`` under ``retired/`` (kept, not deleted) and drop any lake view left
    without files. Moving a folder is a rename on a local lake; on an object store fsspec copies then deletes."""
    now = now or datetime.now(timezone.utc)
    fs = lake.fs  # the lake's own filesystem: an object store's endpoint and credentials come with it
    folders = _release_folders(lake, fs, release)
    destination = _free_destination(lake, release, now)
    record = {"release": release, "retired_at": now.isoformat(), "reason": reason,
              "partition_keys": partition_keys, "moved": folders}
    # The record first: a move interrupted half-way still says where its files came from.
    lake.write_bytes(json.dumps(record, indent=2).encode(), destination, RETIREMENT_RECORD)
    for relative in folders:
        target = lake.path(destination, relative)
        fs.makedirs(posixpath.dirname(target), exist_ok=True)  # so a local move is one rename, never a copy
        fs.mv(lake.path(relative), target, recursive=True)
    for table in sorted({relative.split("/")[1] for relative in folders if relative.startswith("tables/")}):
        if not lake.glob(f"tables/{table}/**/*.parquet"):
            warehouse.ensure_lake_view(table)  # its last files left: drop the view, which would fail to read
    return RetiredRelease(release, partition_keys, folders, destination, lake.url(destination))
