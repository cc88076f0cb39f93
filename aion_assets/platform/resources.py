"""Dagster resources for the shared stack. Thin: each hands out a pure object from this package.

Their values come from the settings (platform/settings.py). A value the user set through its environment variable
is passed as ``dg.EnvVar(NAME)``, so the UI shows which variable configures the resource; a default is passed as
the plain value it takes.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from aion_assets.platform.lake import Lake, ObjectStore
from aion_assets.platform.settings import SECRET_FIELDS, SETTING_BY_FIELD, AionSettings, get_settings
from aion_assets.platform.tracking import use_experiment
from aion_assets.platform.warehouse import Warehouse


class LakeResource(dg.ConfigurableResource):
    """Parquet tables and arrays. ``root`` is a local folder or an fsspec URL (s3://bucket/aion in production);
    an object store's endpoint and credentials come with it (empty: the SDK's defaults)."""

    root: str
    s3_endpoint_url: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_region: str = "us-east-1"

    def get(self) -> Lake:
        store = ObjectStore(endpoint_url=self.s3_endpoint_url, access_key_id=self.s3_access_key_id or None,
                            secret_access_key=self.s3_secret_access_key or None, region=self.s3_region)
        return Lake(self.root, store=store)


class WarehouseResource(dg.ConfigurableResource):
    """The tables users query: the DuckDB file (writers hold it only for the moment of a write), or DuckLake
    when ``ducklake_catalog`` names its PostgreSQL catalog (many writers at once)."""

    path: str
    lake: LakeResource
    ducklake_catalog: str = ""

    def get(self) -> Warehouse:
        return Warehouse(self.path, self.lake.get(), ducklake_catalog=self.ducklake_catalog or None)


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


def from_setting(settings: AionSettings, field: str) -> str | dg.EnvVar:
    """``dg.EnvVar`` of the field's variable when the user set it, else the field's value as a string ("" for
    none). A secret is only ever an ``EnvVar`` (the UI shows its name, never its value); the Anthropic key is not
    a resource field at all."""
    if field in SECRET_FIELDS and not settings.variable_set(field):
        return ""
    if field == "anthropic_api_key":
        raise ValueError("the API key is never a resource field: the client reads it from the settings")
    if settings.variable_set(field):
        return dg.EnvVar(SETTING_BY_FIELD[field].variable)
    value = getattr(settings, field)
    return "" if value is None else str(value)


def platform_resources(settings: AionSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    lake = LakeResource(root=from_setting(settings, "lake_root"),
                        **{field: from_setting(settings, field) for field in
                           ("s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", "s3_region")})
    return {
        "lake": lake,
        "warehouse": WarehouseResource(path=from_setting(settings, "warehouse_path"), lake=lake,
                                       ducklake_catalog=from_setting(settings, "ducklake_catalog")),
        "mlflow": MlflowResource(
            tracking_uri=from_setting(settings, "mlflow_tracking_uri"),
            artifact_root=from_setting(settings, "mlflow_artifact_root"),
        ),
        "releases": ReleasesResource(releases_dir=from_setting(settings, "releases_dir")),
    }
