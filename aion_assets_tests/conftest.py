"""Shared fixtures: an isolated stack per test and subsets of the real sample releases.

The sample data (../shared/data) is read-only; tests that need altered inputs copy a subset into tmp_path.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from aion_assets.platform.lake import Lake
from aion_assets.platform.settings import (
    KNOWN_VARIABLES,
    SHARED_DATA,
    AionSettings,
    get_settings,
    use_offline_model_hub,
)
from aion_assets.platform.warehouse import Warehouse

# The local Anthropic-compatible server's fixtures (fake_anthropic, dummy_api_key) for every test module.
pytest_plugins = ["aion_assets_tests.fake_anthropic"]

use_offline_model_hub()

# A stack's locations come from AION_HOME alone; a user's own settings must not leak into a test's stack.
STACK_VARS = ("AION_PROFILE", "DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI",
              "AION_MLFLOW_ARTIFACTS", "AION_DUCKLAKE_CATALOG", "AION_DAGSTER_POSTGRES_URL", "AION_EXECUTOR",
              "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AION_SENSOR_INTERVAL_S")
assert set(STACK_VARS) <= set(KNOWN_VARIABLES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first: with `-n 2 --dist loadfile` a long file that starts last keeps one
    worker busy alone at the end; started first, it runs beside the rest of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"sample data missing at {SHARED_DATA}: link ../shared beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_releases(shared_data: Path) -> Path:
    return shared_data / "releases"


@pytest.fixture
def aion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_releases: Path) -> AionSettings:
    """A fresh embedded stack under tmp_path, as its settings; the watched folder is the real sample releases
    unless a test points AION_RELEASES_DIR elsewhere (the settings follow the environment, no cache to reset)."""
    for var in STACK_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AION_HOME", str(tmp_path / "aion"))
    monkeypatch.setenv("AION_RELEASES_DIR", str(sample_releases))
    return get_settings()


@pytest.fixture
def lake(aion_home: AionSettings) -> Lake:
    return Lake(aion_home.lake_root)


@pytest.fixture
def warehouse(aion_home: AionSettings, lake: Lake) -> Warehouse:
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
