"""Release discovery, validation, fingerprints and shard planning on the real sample releases and broken copies."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from aion_assets.cutouts.releases import (
    DEFAULT_SHARD_SIZE,
    ReleaseError,
    discover_release_dirs,
    env_shard_size,
    load_release,
    plan_release_updates,
    read_catalog,
    release_fingerprint,
    shard_keys,
)
from aion_assets.platform.layout import ShardKey


def documented_releases(shared_data: Path) -> dict[str, tuple[int, str]]:
    """release -> (objects, labels) from the table of the data README's ``releases/`` section."""
    text = (shared_data / "README.md").read_text()
    section = text.split("## releases/", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.match(r"^[\d,]+ ", cells[1]):
            table[cells[0]] = (int(cells[1].split()[0].replace(",", "")), cells[2])
    return table


def test_sample_releases_load_with_counts_and_labels(sample_releases: Path, shared_data: Path) -> None:
    documented = documented_releases(shared_data)
    folders = discover_release_dirs(sample_releases)
    # Every release folder is discovered, and the README documents exactly those.
    assert [f.name for f in folders] == sorted(p.name for p in sample_releases.iterdir() if (p / "manifest.json").is_file())
    releases = {r.name: r for r in (load_release(f) for f in folders)}
    assert set(releases) == set(documented) and len(releases) >= 5
    for name, release in releases.items():
        lines = (sample_releases / name / "catalog.csv").read_text().strip().splitlines()
        manifest = json.loads((sample_releases / name / "manifest.json").read_text())
        assert release.n_objects == len(lines) - 1 == manifest["n_objects"] == documented[name][0]
        # Labels exactly where the README says some are published.
        assert (release.label_columns == []) == (documented[name][1] == "none published"), name
    assert releases["gz1-sdss"].label_columns == ["gz1_class"]
    assert "ring" in releases["gz-decals-rings"].label_columns
    assert {"is_lens", "category"} <= set(releases["spacewarps-cfhtls"].label_columns)


def test_catalog_is_read_as_strings(sample_releases: Path) -> None:
    catalog = read_catalog(sample_releases / "gz1-sdss")
    assert all(dtype == pl.String for dtype in catalog.dtypes)
    raw_first_id = (sample_releases / "gz1-sdss" / "catalog.csv").read_text().splitlines()[1].split(",")[0]
    assert catalog["object_id"][0] == raw_first_id  # an 18-digit objid survives exactly


def test_parquet_catalog(copy_release: Callable[..., Path]) -> None:
    folder = copy_release("gz-decals-rings", limit=5)
    catalog = pl.read_csv(folder / "catalog.csv", infer_schema_length=1000)  # typed columns: floats, ints
    catalog.write_parquet(folder / "catalog.parquet")
    (folder / "catalog.csv").unlink()
    release = load_release(folder)
    assert release.catalog_file == "catalog.parquet" and release.n_objects == 5
    assert all(dtype == pl.String for dtype in read_catalog(folder).dtypes)


@pytest.mark.parametrize(
    ("manifest_text", "catalog_text", "reason"),
    [
        ("{not json", None, "manifest.json does not parse"),
        (json.dumps({"survey": "x"}), None, "no 'release' name"),
        (json.dumps({"release": "bad|name"}), None, "release name may hold only"),
        (None, "object_id,ra,dec\na,1,2\n", "lacks required column(s) image"),
        (None, "object_id,image\n", "catalog has no rows"),
    ],
)
def test_broken_releases_raise_a_clear_error(
    copy_release: Callable[..., Path], manifest_text: str | None, catalog_text: str | None, reason: str
) -> None:
    folder = copy_release("spacewarps-cfhtls", limit=3)
    if manifest_text is not None:
        (folder / "manifest.json").write_text(manifest_text)
    if catalog_text is not None:
        (folder / "catalog.csv").write_text(catalog_text)
    with pytest.raises(ReleaseError, match=f".*{reason.replace('(', '.').replace(')', '.')}"):
        load_release(folder)


def test_missing_catalog(copy_release: Callable[..., Path]) -> None:
    folder = copy_release("spacewarps-cfhtls", limit=2)
    (folder / "catalog.csv").unlink()
    with pytest.raises(ReleaseError, match="no catalog.csv or catalog.parquet"):
        load_release(folder)


def test_fingerprint_follows_content_not_reads(copy_release: Callable[..., Path]) -> None:
    folder = copy_release("gz1-sdss", limit=4)
    first = release_fingerprint(folder, 100)
    assert release_fingerprint(folder, 100) == first
    assert release_fingerprint(folder, 50) != first  # another shard size means other partitions
    image = sorted((folder / "images").iterdir())[0]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = release_fingerprint(folder, 100)
    assert touched != first
    (folder / "images" / "new.jpg").write_bytes(image.read_bytes())
    assert release_fingerprint(folder, 100) not in {first, touched}


def test_shard_size_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AION_SHARD_SIZE", raising=False)
    assert env_shard_size() == DEFAULT_SHARD_SIZE <= 100_000
    monkeypatch.setenv("AION_SHARD_SIZE", "3")
    assert env_shard_size() == 3
    assert shard_keys("gz1-sdss", 7, 3) == ["gz1-sdss|0000", "gz1-sdss|0001", "gz1-sdss|0002"]
    monkeypatch.setenv("AION_SHARD_SIZE", "zero")
    with pytest.raises(ValueError, match="AION_SHARD_SIZE"):
        env_shard_size()


def test_plan_adds_new_runs_changed_skips_broken(
    copy_release: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AION_SHARD_SIZE", "4")
    root = tmp_path / "watched"
    copy_release("gz1-sdss", limit=6, dest=root)
    copy_release("spacewarps-cfhtls", limit=3, dest=root)
    broken = copy_release("gz-decals-rings", limit=2, dest=root)
    (broken / "manifest.json").write_text("{")
    (root / "not-a-release").mkdir()  # no manifest: not a release, silently ignored

    plan = plan_release_updates(root, {})
    assert plan.add_keys == ["gz1-sdss|0000", "gz1-sdss|0001", "spacewarps-cfhtls|0000"]
    assert [r.partition_key for r in plan.runs] == plan.add_keys
    assert [s.folder for s in plan.skipped] == ["gz-decals-rings"]
    assert "manifest.json does not parse" in plan.skipped[0].reason

    again = plan_release_updates(root, plan.fingerprints, existing_keys=set(plan.add_keys))
    assert again.add_keys == [] and again.runs == []
    by_release = {ShardKey.parse(k).release: v for k, v in plan.fingerprints.items()}
    assert plan_release_updates(root, by_release, existing_keys=set(plan.add_keys)).runs == []

    with (root / "spacewarps-cfhtls" / "catalog.csv").open("a") as handle:
        handle.write("extra,images/AT_asteroid.jpg,,,CFHTLS,artifacts,misc,0\n")
    changed = plan_release_updates(root, plan.fingerprints, existing_keys=set(plan.add_keys))
    assert [r.partition_key for r in changed.runs] == ["spacewarps-cfhtls|0000"]
    assert changed.runs[0].run_key != plan.runs[2].run_key
