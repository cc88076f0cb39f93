"""Where the embedded stack lives. Pure: no dagster import.

Every path comes from an environment variable with a default under AION_HOME, so that the Dagster resources
(fed by ``dg.EnvVar``), the CLI and the tests all agree on one layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Repository root: aion_assets/platform/settings.py -> parents[2]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_RELEASES = PROJECT_ROOT.parent / "shared" / "data" / "releases"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class StackPaths:
    aion_home: Path
    dagster_home: Path
    lake_root: str  # a local path or an fsspec URL (s3://..., gs://...)
    warehouse_path: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    releases_dir: Path | None


def _aion_home() -> Path:
    return Path(os.environ.get("AION_HOME", str(PROJECT_ROOT / ".aion"))).expanduser().resolve()


def default_releases_dir() -> Path | None:
    """The watched folder: AION_RELEASES_DIR, else the shared sample releases when they exist."""
    configured = os.environ.get("AION_RELEASES_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return SHARED_RELEASES if SHARED_RELEASES.is_dir() else None


def stack_paths() -> StackPaths:
    home = _aion_home()
    return StackPaths(
        aion_home=home,
        dagster_home=Path(os.environ.get("DAGSTER_HOME", str(home / "dagster"))).resolve(),
        lake_root=os.environ.get("AION_LAKE_ROOT", str(home / "lake")),
        warehouse_path=Path(os.environ.get("AION_WAREHOUSE", str(home / "warehouse.duckdb"))).resolve(),
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
        mlflow_artifact_root=os.environ.get("AION_MLFLOW_ARTIFACTS", str(home / "mlartifacts")),
        releases_dir=default_releases_dir(),
    )


def env_defaults() -> dict[str, str]:
    """The value every stack variable takes when unset, derived from AION_HOME."""
    paths = stack_paths()
    return {
        "AION_HOME": str(paths.aion_home),
        "DAGSTER_HOME": str(paths.dagster_home),
        "AION_LAKE_ROOT": paths.lake_root,
        "AION_WAREHOUSE": str(paths.warehouse_path),
        "MLFLOW_TRACKING_URI": paths.mlflow_tracking_uri,
        "AION_MLFLOW_ARTIFACTS": paths.mlflow_artifact_root,
        # Model choices are settings too: they feed the code versions, so changing one marks what depends on it.
        "AION_TEXT_ENCODER": "all-MiniLM-L6-v2",
        "AION_IMAGE_ENCODER": "efficientnet-lite0",
        # An empty value means "no watched folder"; the sensor and the CLI say so in one line.
        "AION_RELEASES_DIR": str(paths.releases_dir) if paths.releases_dir else "",
    }


def apply_env_defaults() -> StackPaths:
    """Fill in every stack variable that is unset, so ``dg.EnvVar`` always resolves."""
    for key, value in env_defaults().items():
        os.environ.setdefault(key, value)
    return stack_paths()
