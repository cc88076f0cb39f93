"""Every setting of the stack, read from the environment in one place. Pure: no dagster import.

``SETTINGS`` is the registry: per field of ``AionSettings``, its environment variable, its default and what it
is (the README's settings table and its test are built from it). ``load_settings(environ)`` turns a mapping
into one validated ``AionSettings``; ``get_settings()`` does so for ``os.environ``, cached on a snapshot of the
known variables, so a changed variable (a test's ``monkeypatch.setenv``) gives new settings without anyone
resetting a cache.

This is the only module of the package that reads or writes ``os.environ``.

Profiles: ``embedded`` (default) derives every unset location from ``AION_HOME``; ``cluster`` refuses to invent
the shared ones (lake, warehouse, MLflow): a missing one is a ``SettingsError`` naming its variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator

from aion_assets.platform.lake import ObjectStore

# Repository root: aion_assets/platform/settings.py -> parents[2]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SHARED_RELEASES = SHARED_DATA / "releases"
DEFAULT_RECORDED_DESCRIPTIONS = SHARED_DATA / "descriptions" / "recorded_descriptions.jsonl"
DEFAULT_STELLAR_DIR = SHARED_DATA / "stellar"
# The Legacy Survey viewer's cutout endpoint (cutouts/from_coords.py takes its default from here).
DEFAULT_CUTOUT_SERVICE_URL = "https://www.legacysurvey.org/viewer/cutout.jpg"
# Shards are decoded in memory before their atomic write: 25k RGB cutouts at 160 px are ~1.9 GB (flux adds
# ~4x that for 3-band float32), well inside a worker, and a 140M-object survey is still a few thousand partitions.
DEFAULT_SHARD_SIZE = 25_000
MAX_SHARD_SIZE = 100_000
# Budgets of one source cutout, checked before it is decoded (cutouts/readers.py). A survey cutout is a few
# hundred pixels a side (a 256 px grz cube is 0.2 Mpx, 0.8 MB): 16 Mpx (4096 x 4096 of one band, 2048 x 2048 of
# four) and 128 MiB (16 Mpx of float64) leave room for any real one and stop a decompression bomb early.
DEFAULT_MAX_CUTOUT_PIXELS = 4096 * 4096
DEFAULT_MAX_CUTOUT_BYTES = 128 * 1024 * 1024
# Seconds between ticks of the release sensor and of the automation sensor: a new release is ingested, then
# embedded and indexed, a tick or two after it lands.
DEFAULT_SENSOR_INTERVAL_S = 60
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PROFILE_VARIABLE = "AION_PROFILE"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the environment variable to fix."""


@dataclass(frozen=True)
class Setting:
    """One row of the registry. ``default`` computes the value when the variable is unset (from AION_HOME where
    it is a location); ``shown_default`` is how the README writes it."""

    field: str
    variable: str
    shown_default: str
    description: str
    default: Callable[[Path], str | None]
    required_on_cluster: bool = False
    blank_is_a_value: bool = False  # AION_RELEASES_DIR="" means "no watched folder", not "use the default"


def _releases_default(_home: Path) -> str | None:
    return str(SHARED_RELEASES) if SHARED_RELEASES.is_dir() else None


SETTINGS: tuple[Setting, ...] = (
    Setting("profile", PROFILE_VARIABLE, "`embedded`",
            "`embedded`: everything under `AION_HOME`; `cluster`: lake, warehouse and MLflow must be set",
            lambda home: "embedded"),
    Setting("aion_home", "AION_HOME", "`.aion/` in the repository",
            "root of the embedded stack; the locations below default to folders in it",
            lambda home: str(home)),
    Setting("dagster_home", "DAGSTER_HOME", "`AION_HOME/dagster`",
            "Dagster instance (`dagster.yaml`: sqlite storage, run queue, pools `gpu`=1, `duckdb_writer`=1, "
            "`vlm_api`=1)", lambda home: str(home / "dagster")),
    Setting("lake_root", "AION_LAKE_ROOT", "`AION_HOME/lake`",
            "lake: Parquet tables, NPY arrays, checkpoints, FAISS indexes (a folder or an fsspec URL such as "
            "`s3://bucket/aion`)", lambda home: str(home / "lake"), required_on_cluster=True),
    Setting("warehouse_path", "AION_WAREHOUSE", "`AION_HOME/warehouse.duckdb`",
            "warehouse: the DuckDB file users query (unless `AION_DUCKLAKE_CATALOG` is set)",
            lambda home: str(home / "warehouse.duckdb")),
    Setting("ducklake_catalog", "AION_DUCKLAKE_CATALOG", "none (the DuckDB file)",
            "warehouse as DuckLake: the PostgreSQL connection of its catalog (libpq form: `dbname=aion "
            "host=... user=...`), its data files in the lake under `warehouse/`; many writers at once",
            lambda home: None, required_on_cluster=True),
    Setting("dagster_postgres_url", "AION_DAGSTER_POSTGRES_URL", "none (sqlite under `DAGSTER_HOME`)",
            "SQLAlchemy URL of Dagster's run, event and schedule storage (`dagster-postgres`), with the psycopg2 "
            "driver: `postgresql+psycopg2://user:password@host:5432/dagster`",
            lambda home: None, required_on_cluster=True),
    Setting("executor", "AION_EXECUTOR", "empty (automatic)",
            "how a run's steps run: `k8s` (one pod per step, `k8s_job_executor`), `multiprocess` or `in_process`; "
            "empty: `k8s` on the cluster profile, Dagster's default elsewhere", lambda home: ""),
    Setting("s3_endpoint_url", "AWS_ENDPOINT_URL", "empty (AWS)",
            "object store endpoint of an `s3://` lake (MinIO, Ceph, a test server)", lambda home: ""),
    Setting("s3_access_key_id", "AWS_ACCESS_KEY_ID", "none (the SDK's credential chain)",
            "object store key id", lambda home: None),
    Setting("s3_secret_access_key", "AWS_SECRET_ACCESS_KEY", "none (the SDK's credential chain)",
            "object store secret (never logged, stored or shown)", lambda home: None),
    Setting("s3_region", "AWS_REGION", "`us-east-1`", "object store region", lambda home: "us-east-1"),
    Setting("mlflow_tracking_uri", "MLFLOW_TRACKING_URI", "`sqlite:///AION_HOME/mlflow.db`",
            "MLflow tracking store", lambda home: f"sqlite:///{home / 'mlflow.db'}", required_on_cluster=True),
    Setting("mlflow_artifact_root", "AION_MLFLOW_ARTIFACTS", "`AION_HOME/mlartifacts`",
            "where MLflow run artifacts go", lambda home: str(home / "mlartifacts")),
    Setting("releases_dir", "AION_RELEASES_DIR", "`../shared/data/releases` when it exists",
            "watched folder of survey releases (read-only input); empty: none", _releases_default,
            blank_is_a_value=True),
    Setting("shard_size", "AION_SHARD_SIZE", f"`{DEFAULT_SHARD_SIZE}`",
            f"objects per partition of a release, at most {MAX_SHARD_SIZE:,}", lambda home: str(DEFAULT_SHARD_SIZE)),
    Setting("max_cutout_pixels", "AION_MAX_CUTOUT_PIXELS", f"`{DEFAULT_MAX_CUTOUT_PIXELS}` (4096 x 4096)",
            "pixel budget of one source cutout (width x height x bands, from its header, before decoding); "
            "larger ones are quarantined", lambda home: str(DEFAULT_MAX_CUTOUT_PIXELS)),
    Setting("max_cutout_bytes", "AION_MAX_CUTOUT_BYTES", f"`{DEFAULT_MAX_CUTOUT_BYTES}` (128 MiB)",
            "byte budget of one source cutout: its file, and its decompressed data (gzip inflated with this cap); "
            "larger ones are quarantined", lambda home: str(DEFAULT_MAX_CUTOUT_BYTES)),
    Setting("text_encoder", "AION_TEXT_ENCODER", "`all-MiniLM-L6-v2`",
            "text model: the one shipped in a wheel, or a model directory", lambda home: "all-MiniLM-L6-v2"),
    Setting("image_encoder", "AION_IMAGE_ENCODER", "`efficientnet-lite0`",
            "image model: `efficientnet-lite0` (shipped in a wheel), `aion1`, or `zoo-lite0-v<N>` (version N of "
            "zoo_pretrained_encoder)", lambda home: "efficientnet-lite0"),
    Setting("image_precision", "AION_IMAGE_PRECISION", "`fp32`",
            "precision of the image model's forward pass: `fp32` or `bf16`", lambda home: "fp32"),
    Setting("aion1_weights_dir", "AION_AION1_WEIGHTS_DIR", "none",
            "local copy of the AION-1 weights (for `AION_IMAGE_ENCODER=aion1`)", lambda home: None),
    Setting("describer", "AION_DESCRIBER", "empty (automatic)",
            "`recorded` or `anthropic`; empty: `anthropic` when `ANTHROPIC_API_KEY` is set, else `recorded`",
            lambda home: ""),
    Setting("recorded_descriptions", "AION_RECORDED_DESCRIPTIONS",
            "`../shared/data/descriptions/recorded_descriptions.jsonl`",
            "recorded VLM answers replayed offline", lambda home: str(DEFAULT_RECORDED_DESCRIPTIONS)),
    Setting("stellar_dir", "AION_STELLAR_DIR", "`../shared/data/stellar`",
            "folder of the stellar label tables (APOGEE DR12, DR10, SEGUE; read-only input)",
            lambda home: str(DEFAULT_STELLAR_DIR)),
    Setting("anthropic_api_key", "ANTHROPIC_API_KEY", "none",
            "key of the live VLM (never logged, stored or shown)", lambda home: None),
    Setting("anthropic_base_url", "ANTHROPIC_BASE_URL", "empty (the SDK's default)",
            "Anthropic API endpoint (a proxy, or the tests' local server)", lambda home: ""),
    Setting("sql_dir", "AION_SQL_DIR", "the SQL models shipped in the package",
            "folder of SELECT-only `.sql` models", lambda home: None),
    Setting("sensor_interval_s", "AION_SENSOR_INTERVAL_S", f"`{DEFAULT_SENSOR_INTERVAL_S}`",
            "seconds between ticks of the release sensor and of the automation sensor (when the daemon runs)",
            lambda home: str(DEFAULT_SENSOR_INTERVAL_S)),
    Setting("log_level", "AION_LOG_LEVEL", "`INFO`", "log level of CLI runs", lambda home: "INFO"),
    Setting("cutout_service_url", "AION_CUTOUT_SERVICE_URL", f"`{DEFAULT_CUTOUT_SERVICE_URL}`",
            "cutout endpoint of `aion releases from-coords`", lambda home: DEFAULT_CUTOUT_SERVICE_URL),
)
SETTING_BY_FIELD: dict[str, Setting] = {setting.field: setting for setting in SETTINGS}
SETTING_BY_VARIABLE: dict[str, Setting] = {setting.variable: setting for setting in SETTINGS}
# Never shown: not in an error message, a resource field or the UI.
SECRET_FIELDS = frozenset({"anthropic_api_key", "s3_secret_access_key", "dagster_postgres_url"})
KNOWN_VARIABLES: tuple[str, ...] = tuple(setting.variable for setting in SETTINGS)
DEFAULT_AION_HOME = PROJECT_ROOT / ".aion"


def _resolved(path: Path | None) -> Path | None:
    return path.expanduser().resolve() if path is not None else None


class AionSettings(BaseModel):
    """The validated settings of one environment. Immutable; ``explicit`` names the variables that were set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: Literal["embedded", "cluster"]
    aion_home: Path
    dagster_home: Path
    lake_root: str  # a local path or an fsspec URL (s3://..., gs://...)
    warehouse_path: Path
    ducklake_catalog: str | None
    dagster_postgres_url: SecretStr | None  # may carry a password
    executor: Literal["", "k8s", "multiprocess", "in_process"]
    s3_endpoint_url: str
    s3_access_key_id: str | None
    s3_secret_access_key: SecretStr | None
    s3_region: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    releases_dir: Path | None
    shard_size: int
    max_cutout_pixels: int
    max_cutout_bytes: int
    text_encoder: str
    image_encoder: str
    image_precision: Literal["fp32", "bf16"]
    aion1_weights_dir: Path | None
    describer: Literal["", "recorded", "anthropic"]
    recorded_descriptions: Path
    stellar_dir: Path
    anthropic_api_key: SecretStr | None
    anthropic_base_url: str
    sql_dir: Path | None
    sensor_interval_s: int
    log_level: str
    cutout_service_url: str
    explicit: frozenset[str]

    @field_validator("aion_home", "dagster_home", "warehouse_path", "releases_dir", "recorded_descriptions",
                     "stellar_dir", "sql_dir", "aion1_weights_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return _resolved(path)

    @field_validator("profile", "describer", "image_precision", "executor", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("dagster_postgres_url")
    @classmethod
    def _psycopg2_driver(cls, url: SecretStr | None) -> SecretStr | None:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, under which dagster-postgres's NOTIFY fails
        # on its first event: say so at load instead.
        if url is not None and not url.get_secret_value().startswith("postgresql+psycopg2://"):
            raise ValueError("must name the psycopg2 driver: postgresql+psycopg2://user:password@host:port/db")
        return url

    @field_validator("shard_size")
    @classmethod
    def _shard_size_in_range(cls, size: int) -> int:
        if not 0 < size <= MAX_SHARD_SIZE:
            raise ValueError(f"must be between 1 and {MAX_SHARD_SIZE}")
        return size

    @field_validator("max_cutout_pixels", "max_cutout_bytes", "sensor_interval_s")
    @classmethod
    def _budget_positive(cls, budget: int) -> int:
        if budget <= 0:
            raise ValueError("must be a positive number")
        return budget

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        level = value.strip().upper() if isinstance(value, str) else value
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("text_encoder", "image_encoder", "lake_root", "warehouse_path", "mlflow_tracking_uri",
                     mode="before")
    @classmethod
    def _not_blank(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if isinstance(value, str) else value

    def object_store(self) -> ObjectStore:
        """How the lake's ``s3://`` root is reached (endpoint, credentials, region)."""
        secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
        return ObjectStore(endpoint_url=self.s3_endpoint_url, access_key_id=self.s3_access_key_id,
                           secret_access_key=secret, region=self.s3_region)

    @property
    def step_executor(self) -> str:
        """The executor runs use: the one set, else `k8s` on the cluster profile and "" (Dagster's) elsewhere."""
        return self.executor or ("k8s" if self.profile == "cluster" else "")

    def variable_set(self, field: str) -> bool:
        """Whether the user set this field's variable (rather than it taking its default)."""
        return SETTING_BY_FIELD[field].variable in self.explicit


def _given(environ: Mapping[str, str], setting: Setting) -> str | None:
    """The variable's value when it counts as set: blank means unset, except where blank is itself a value."""
    value = environ.get(setting.variable)
    if value is None or (not value.strip() and not setting.blank_is_a_value):
        return None
    return value


def _raw_values(environ: Mapping[str, str]) -> tuple[dict[str, str | None], frozenset[str]]:
    given = {setting.field: _given(environ, setting) for setting in SETTINGS}
    explicit = frozenset(SETTING_BY_FIELD[field].variable for field, value in given.items() if value is not None)
    home = Path(given["aion_home"] or DEFAULT_AION_HOME).expanduser().resolve()
    profile = (given["profile"] or "embedded").strip().lower()
    missing = [s.variable for s in SETTINGS if s.required_on_cluster and given[s.field] is None]
    if profile == "cluster" and missing:
        raise SettingsError(
            f"{PROFILE_VARIABLE}=cluster needs {', '.join(missing)} set: a cluster never falls back to a local "
            f"default under AION_HOME ({home})")
    values = {s.field: given[s.field] if given[s.field] is not None else s.default(home) for s in SETTINGS}
    if values["releases_dir"] is not None and not values["releases_dir"].strip():
        values["releases_dir"] = None  # AION_RELEASES_DIR="": no watched folder
    return values, explicit


def _error_message(error: ValidationError, values: Mapping[str, str | None]) -> str:
    problems = []
    for detail in error.errors():
        field = str(detail["loc"][0]) if detail["loc"] else ""
        setting = SETTING_BY_FIELD.get(field)
        if setting is None:
            problems.append(detail["msg"])
            continue
        shown = "(set)" if field in SECRET_FIELDS else repr(values.get(field))
        problems.append(f"{setting.variable}={shown}: {detail['msg']}")
    return "invalid settings: " + "; ".join(problems)


def load_settings(environ: Mapping[str, str]) -> AionSettings:
    """The settings ``environ`` describes, validated; a SettingsError names each variable that is wrong."""
    values, explicit = _raw_values(environ)
    try:
        return AionSettings.model_validate({**values, "explicit": explicit})
    except ValidationError as error:
        raise SettingsError(_error_message(error, values)) from None


@lru_cache(maxsize=16)
def _settings_for(snapshot: tuple[tuple[str, str], ...]) -> AionSettings:
    return load_settings(dict(snapshot))


def _snapshot() -> tuple[tuple[str, str], ...]:
    return tuple((name, os.environ[name]) for name in KNOWN_VARIABLES if name in os.environ)


def get_settings() -> AionSettings:
    """The settings of the current environment, read once per distinct set of values of the known variables."""
    return _settings_for(_snapshot())


def settings_table() -> str:
    """The README's settings table (section "The embedded stack"), one row per registry entry."""
    rows = ["| variable | setting | default | what it is |", "| --- | --- | --- | --- |"]
    rows += [f"| `{s.variable}` | `{s.field}` | {s.shown_default} | {s.description} |" for s in SETTINGS]
    return "\n".join(rows)


def default_releases_dir() -> Path | None:
    """The watched folder: AION_RELEASES_DIR, else the shared sample releases when they exist."""
    return get_settings().releases_dir


# -- what this process hands on ------------------------------------------------------------------------------------
OFFLINE_HUB = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def use_offline_model_hub() -> None:
    """Keep huggingface_hub / transformers off the network and tokenizers single-threaded, unless the user chose
    otherwise. Must run before the first huggingface_hub import, which reads these once."""
    for name, value in OFFLINE_HUB.items():
        os.environ.setdefault(name, value)


def subprocess_env(settings: AionSettings | None = None) -> dict[str, str]:
    """The environment of a child process (``dagster dev``): ours, plus DAGSTER_HOME so the child's instance is
    the one this process writes runs to, plus the offline model hub."""
    settings = settings or get_settings()
    return {**OFFLINE_HUB, **os.environ, "DAGSTER_HOME": str(settings.dagster_home)}


def isolated_stack_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process that runs a stack of its own (a benchmark's scratch demo): this one's
    less every setting's variable, so nothing of the user's stack leaks in, plus ``overrides``."""
    kept = {name: value for name, value in os.environ.items() if name not in KNOWN_VARIABLES}
    return {**OFFLINE_HUB, **kept, **overrides}
