"""Dagster resources for the shared stack. Thin: each hands out a pure object from this package."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from aion_assets.platform.lake import Lake
from aion_assets.platform.tracking import use_experiment
from aion_assets.platform.warehouse import Warehouse


class LakeResource(dg.ConfigurableResource):
    """Parquet tables and arrays. ``root`` is a local folder or an fsspec URL (s3://bucket/aion in production)."""

    root: str

    def get(self) -> Lake:
        return Lake(self.root)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file users query. Writers hold it only for the moment of a write."""

    path: str
    lake: LakeResource

    def get(self) -> Warehouse:
        return Warehouse(self.path, self.lake.get())


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking store (sqlite by default) and where run artifacts go."""

    tracking_uri: str
    artifact_root: str

    def experiment(self, name: str) -> str:
        return use_experiment(self.tracking_uri, self.artifact_root, name)


class ReleasesResource(dg.ConfigurableResource):
    """The watched folder of survey releases; empty means none is configured."""

    releases_dir: str = ""

    def root(self) -> Path | None:
        return Path(self.releases_dir) if self.releases_dir else None


def platform_resources() -> dict[str, dg.ConfigurableResource]:
    lake = LakeResource(root=dg.EnvVar("AION_LAKE_ROOT"))
    return {
        "lake": lake,
        "warehouse": WarehouseResource(path=dg.EnvVar("AION_WAREHOUSE"), lake=lake),
        "mlflow": MlflowResource(
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), artifact_root=dg.EnvVar("AION_MLFLOW_ARTIFACTS")
        ),
        "releases": ReleasesResource(releases_dir=dg.EnvVar("AION_RELEASES_DIR")),
    }
