"""Shared fixtures: an isolated stack per test and subsets of the real sample releases.

The sample data (../shared/data) is read-only; tests that need altered inputs copy a subset into tmp_path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from aion_assets.platform.lake import Lake
from aion_assets.platform.settings import SHARED_DATA, StackPaths, env_defaults, stack_paths
from aion_assets.platform.warehouse import Warehouse

# The local Anthropic-compatible server's fixtures (fake_anthropic, dummy_api_key) for every test module.
pytest_plugins = ["aion_assets_tests.fake_anthropic"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STACK_VARS = ("DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI", "AION_MLFLOW_ARTIFACTS")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"sample data missing at {SHARED_DATA}: link ../shared beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_releases(shared_data: Path) -> Path:
    return shared_data / "releases"


@pytest.fixture
def aion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_releases: Path) -> StackPaths:
    """A fresh embedded stack under tmp_path; the watched folder is the real sample releases unless a test
    points AION_RELEASES_DIR elsewhere."""
    for var in STACK_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AION_HOME", str(tmp_path / "aion"))
    monkeypatch.setenv("AION_RELEASES_DIR", str(sample_releases))
    for key, value in env_defaults().items():
        monkeypatch.setenv(key, value)
    return stack_paths()


@pytest.fixture
def lake(aion_home: StackPaths) -> Lake:
    return Lake(aion_home.lake_root)


@pytest.fixture
def warehouse(aion_home: StackPaths, lake: Lake) -> Warehouse:
    return Warehouse(aion_home.warehouse_path, lake)


@pytest.fixture
def copy_release(sample_releases: Path, tmp_path: Path) -> Callable[..., Path]:
    """Copy the first ``limit`` objects of a sample release (manifest, catalog, images) into a writable folder."""

    def _copy(name: str, limit: int | None = None, dest: Path | None = None, rename: str | None = None) -> Path:
        source = sample_releases / name
        target = (dest or tmp_path / "releases") / (rename or name)
        (target / "images").mkdir(parents=True, exist_ok=True)
        catalog = pl.read_csv(source / "catalog.csv", infer_schema_length=0)
        if limit is not None:
            catalog = catalog.head(limit)
        for image in catalog["image"]:
            shutil.copyfile(source / image, target / image)
        catalog.write_csv(target / "catalog.csv")
        manifest = (source / "manifest.json").read_text()
        if rename:
            import json

            data = json.loads(manifest)
            data["release"] = rename
            manifest = json.dumps(data, indent=2)
        (target / "manifest.json").write_text(manifest)
        return target

    return _copy
