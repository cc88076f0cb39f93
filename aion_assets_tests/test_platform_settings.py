"""One settings path: the environment is read in platform/settings.py only, into one validated object that the
resources, the CLI and the pure modules all take their values from."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from aion_assets.platform.resources import LakeResource, platform_resources
from aion_assets.platform.settings import (
    KNOWN_VARIABLES,
    PROJECT_ROOT,
    SETTINGS,
    AionSettings,
    SettingsError,
    get_settings,
    load_settings,
    settings_table,
    subprocess_env,
)

PACKAGE = PROJECT_ROOT / "aion_assets"
ENVIRONMENT_ACCESS = re.compile(r"os\.environ|getenv|environ\[")
CLUSTER = {"AION_PROFILE": "cluster", "AION_LAKE_ROOT": "s3://bucket/aion",
           "AION_DUCKLAKE_CATALOG": "dbname=aion_lake host=pg.internal user=aion",
           "AION_DAGSTER_POSTGRES_URL": "postgresql+psycopg2://dagster:pw@pg.internal:5432/dagster",
           "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
FAKE_KEY = "sk-ant-test-0123456789-never-shown"


def test_only_the_settings_module_touches_the_environment() -> None:
    touching = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                      if ENVIRONMENT_ACCESS.search(path.read_text(encoding="utf-8")))
    assert touching == ["platform/settings.py"]


def test_registry_names_every_field_once() -> None:
    fields = [setting.field for setting in SETTINGS]
    assert sorted(fields) == sorted(set(AionSettings.model_fields) - {"explicit"})
    assert len(set(KNOWN_VARIABLES)) == len(KNOWN_VARIABLES)
    assert all(setting.description and setting.shown_default for setting in SETTINGS)


# -- profiles ----------------------------------------------------------------------------------------------------
def test_embedded_defaults_derive_from_aion_home(tmp_path: Path) -> None:
    settings = load_settings({"AION_HOME": str(tmp_path / "home")})
    home = (tmp_path / "home").resolve()
    assert settings.profile == "embedded" and settings.aion_home == home
    assert settings.dagster_home == home / "dagster"
    assert settings.lake_root == str(home / "lake")
    assert settings.warehouse_path == home / "warehouse.duckdb"
    assert settings.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.mlflow_artifact_root == str(home / "mlartifacts")
    assert (settings.text_encoder, settings.image_encoder, settings.image_precision) == (
        "all-MiniLM-L6-v2", "efficientnet-lite0", "fp32")
    assert (settings.shard_size, settings.log_level, settings.describer) == (25_000, "INFO", "")
    assert settings.recorded_descriptions.name == "recorded_descriptions.jsonl"
    assert settings.anthropic_api_key is None and settings.sql_dir is None
    assert settings.explicit == frozenset({"AION_HOME"})


def test_releases_dir_default_and_empty_means_none(tmp_path: Path, sample_releases: Path) -> None:
    assert load_settings({}).releases_dir == sample_releases.resolve()
    assert load_settings({"AION_RELEASES_DIR": ""}).releases_dir is None
    assert load_settings({"AION_RELEASES_DIR": str(tmp_path)}).releases_dir == tmp_path.resolve()


@pytest.mark.parametrize("missing", ["AION_LAKE_ROOT", "AION_DUCKLAKE_CATALOG", "AION_DAGSTER_POSTGRES_URL",
                                     "MLFLOW_TRACKING_URI"])
def test_cluster_never_falls_back_to_a_local_default(missing: str) -> None:
    environ = {name: value for name, value in CLUSTER.items() if name != missing}
    with pytest.raises(SettingsError, match=missing) as caught:
        load_settings(environ)
    others = set(CLUSTER) - {missing, "AION_PROFILE"}
    assert not any(f"{name} " in str(caught.value) or f"{name}," in str(caught.value) for name in others)


def test_cluster_with_its_locations_set_loads() -> None:
    settings = load_settings(CLUSTER)
    assert settings.profile == "cluster" and settings.lake_root == "s3://bucket/aion"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.ducklake_catalog == CLUSTER["AION_DUCKLAKE_CATALOG"]
    # steps go to Kubernetes pods unless the operator picks another executor (the one-machine test does)
    assert settings.step_executor == "k8s"
    assert load_settings({**CLUSTER, "AION_EXECUTOR": "multiprocess"}).step_executor == "multiprocess"
    assert load_settings({}).step_executor == ""


def test_object_store_settings_reach_fsspec_and_duckdb_and_the_secret_is_never_shown() -> None:
    settings = load_settings({**CLUSTER, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "AKID",
                              "AWS_SECRET_ACCESS_KEY": "s3cr'et"})
    store = settings.object_store()
    options = store.fsspec_options()
    assert options["key"] == "AKID" and options["secret"] == "s3cr'et"
    assert options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9000"
    secret_sql = store.duckdb_secret_sql()
    assert "ENDPOINT '127.0.0.1:9000'" in secret_sql and "USE_SSL false" in secret_sql
    assert "SECRET 's3cr''et'" in secret_sql  # quoted, not injected
    assert "s3cr" not in repr(settings) and "s3cr" not in repr(store)
    with pytest.raises(SettingsError) as caught:
        load_settings({**CLUSTER, "AWS_SECRET_ACCESS_KEY": "s3cr'et", "AION_EXECUTOR": "kubernetes"})
    assert "AION_EXECUTOR" in str(caught.value) and "s3cr" not in str(caught.value)


def test_cluster_definitions_run_steps_with_the_k8s_executor(aion_home: AionSettings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_k8s import k8s_job_executor

    from aion_assets.definitions import build_definitions

    for name, value in {**CLUSTER, "AWS_SECRET_ACCESS_KEY": "never-in-the-ui"}.items():
        monkeypatch.setenv(name, value)
    defs = build_definitions()
    assert defs.executor is k8s_job_executor
    lake = defs.resources["lake"]
    # a secret is handed to the resource as the variable's name, so the UI shows the name, never the value
    assert isinstance(lake.s3_secret_access_key, dg.EnvVar) and "never-in-the-ui" not in repr(lake)
    monkeypatch.setenv("AION_EXECUTOR", "multiprocess")
    assert build_definitions().executor is dg.multiprocess_executor


# -- validation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("variable", "value"), [
    ("AION_SHARD_SIZE", "zero"), ("AION_SHARD_SIZE", "0"), ("AION_SHARD_SIZE", "100001"),
    ("AION_PROFILE", "k8s"), ("AION_IMAGE_PRECISION", "fp16"), ("AION_LOG_LEVEL", "loud"),
    ("AION_DESCRIBER", "gpt"),
])
def test_an_invalid_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}='{value}'"):
        load_settings({variable: value})


def test_values_are_normalised() -> None:
    settings = load_settings({"AION_SHARD_SIZE": "100000", "AION_LOG_LEVEL": "debug", "AION_DESCRIBER": " Recorded ",
                              "AION_IMAGE_PRECISION": "BF16", "AION_PROFILE": "Embedded"})
    assert (settings.shard_size, settings.log_level, settings.describer, settings.image_precision) == (
        100_000, "DEBUG", "recorded", "bf16")


def test_a_blank_variable_is_unset() -> None:
    settings = load_settings({"AION_LAKE_ROOT": "  ", "ANTHROPIC_API_KEY": ""})
    assert settings.lake_root.endswith("lake") and settings.anthropic_api_key is None
    assert settings.explicit == frozenset()


# -- the secret ------------------------------------------------------------------------------------------------------
def test_the_api_key_is_never_shown() -> None:
    settings = load_settings({"ANTHROPIC_API_KEY": FAKE_KEY})
    assert settings.anthropic_api_key.get_secret_value() == FAKE_KEY
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert FAKE_KEY not in shown
    with pytest.raises(SettingsError) as caught:  # an error elsewhere does not print the key either
        load_settings({"ANTHROPIC_API_KEY": FAKE_KEY, "AION_SHARD_SIZE": "x"})
    assert FAKE_KEY not in str(caught.value)


def test_the_api_key_is_no_resource_field(aion_home: AionSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from aion_assets.definitions import build_definitions
    from aion_assets.platform.resources import from_setting

    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    resources = build_definitions().resources
    assert resources and all(FAKE_KEY not in json.dumps(r.model_dump(), default=str) for r in resources.values())
    with pytest.raises(ValueError, match="never a resource field"):
        from_setting(get_settings(), "anthropic_api_key")


# -- one read per environment ------------------------------------------------------------------------------------
def test_get_settings_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AION_SHARD_SIZE", "3")
    first = get_settings()
    assert first.shard_size == 3 and get_settings() is first  # read once for this environment
    monkeypatch.setenv("AION_SHARD_SIZE", "5")
    assert get_settings().shard_size == 5  # no cache to reset
    monkeypatch.setenv("AION_SHARD_SIZE", "zero")
    with pytest.raises(SettingsError, match="AION_SHARD_SIZE"):
        get_settings()


def test_subprocess_env_hands_on_dagster_home(aion_home: AionSettings) -> None:
    assert "DAGSTER_HOME" not in os.environ
    env = subprocess_env()
    assert env["DAGSTER_HOME"] == str(aion_home.dagster_home)
    assert env["AION_HOME"] == os.environ["AION_HOME"] and env["HF_HUB_OFFLINE"]


# -- resources: an EnvVar for what the user set, the value otherwise ------------------------------------------------
def test_resources_show_the_variables_the_user_set(aion_home: AionSettings, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    from aion_assets.encoders.resources import encoder_resources
    from aion_assets.vlm.resources import describer_resource

    monkeypatch.setenv("AION_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("AION_TEXT_ENCODER", "minilm")
    settings = get_settings()
    platform, encoders = platform_resources(settings), encoder_resources(settings)
    assert isinstance(platform["lake"].root, dg.EnvVar) and platform["lake"].root.env_var_name == "AION_LAKE_ROOT"
    assert isinstance(platform["releases"].releases_dir, dg.EnvVar)  # the fixture sets AION_RELEASES_DIR
    assert not isinstance(platform["warehouse"].path, dg.EnvVar)
    assert platform["warehouse"].path == str(aion_home.warehouse_path)
    assert isinstance(encoders["text_encoder"].spec, dg.EnvVar)
    assert encoders["image_encoder"].spec == "efficientnet-lite0"
    describer = describer_resource(settings)
    assert describer.recorded_path == str(settings.recorded_descriptions) and describer.base_url == ""
    monkeypatch.setenv("AION_RECORDED_DESCRIPTIONS", str(settings.recorded_descriptions))
    from_variable = describer_resource()
    assert isinstance(from_variable.recorded_path, dg.EnvVar)
    assert from_variable.code_version() == describer.code_version()  # the same answers file, read at load


def test_a_set_variable_reaches_the_running_resource(aion_home: AionSettings, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("AION_LAKE_ROOT", str(tmp_path / "elsewhere"))

    @dg.asset
    def lake_root(lake: LakeResource) -> str:
        return lake.root

    result = dg.materialize([lake_root], resources=platform_resources())
    assert result.output_for_node("lake_root") == str(tmp_path / "elsewhere")


def test_describer_defaults_have_one_source() -> None:
    from aion_assets.vlm.client import Pricing
    from aion_assets.vlm.describers import AnthropicConfig
    from aion_assets.vlm.resources import DescriberResource

    pure, resource, prices = AnthropicConfig(), DescriberResource(), Pricing()
    shared = {f.name for f in dataclasses.fields(AnthropicConfig)} & set(DescriberResource.model_fields)
    assert {"model", "max_tokens", "input_price_per_mtok", "budget_usd", "base_url"} <= shared
    assert {name: getattr(resource, name) for name in shared} == {name: getattr(pure, name) for name in shared}
    assert (pure.input_price_per_mtok, pure.output_price_per_mtok, pure.batch_discount) == (
        prices.input_per_mtok, prices.output_per_mtok, prices.batch_discount)


# -- loading the definitions --------------------------------------------------------------------------------------
LOAD_WITHOUT_SETTINGS = """
import os
ours = lambda: {k: v for k, v in os.environ.items() if k.startswith(("AION_", "DAGSTER_", "MLFLOW_", "ANTHROPIC_",
                                                                      "HF_", "TRANSFORMERS_", "TOKENIZERS_"))}
before = ours()
import dagster as dg
from aion_assets.definitions import defs
from aion_assets.platform.settings import PROJECT_ROOT
keys = defs.resolve_asset_graph().get_all_asset_keys()
assert ours() == before, (before, ours())
lake = defs.resources["lake"].root
assert not isinstance(lake, dg.EnvVar) and lake == str(PROJECT_ROOT / ".aion" / "lake"), lake
print(len(keys))
"""


def test_definitions_load_with_no_setting_and_write_no_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KNOWN_VARIABLES and not k.startswith("AION_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_SETTINGS], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip().splitlines()[-1]) > 10


def test_cluster_without_a_lake_fails_at_load(aion_home: AionSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from aion_assets.definitions import build_definitions

    for name, value in CLUSTER.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AION_LAKE_ROOT")
    with pytest.raises(SettingsError, match="AION_LAKE_ROOT"):
        build_definitions()


# -- the instance the CLI writes to is the one the UI opens ---------------------------------------------------------
def test_stack_instance_needs_no_dagster_home(aion_home: AionSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from aion_assets.runner import stack_instance

    @dg.asset
    def hello() -> int:
        return 1

    assert "DAGSTER_HOME" not in os.environ
    instance = stack_instance()
    run_id = dg.materialize([hello], instance=instance).run_id
    assert Path(instance.root_directory) == aion_home.dagster_home
    # What `dagster dev` opens: DAGSTER_HOME from subprocess_env(), read by Dagster's own DagsterInstance.get().
    monkeypatch.setenv("DAGSTER_HOME", subprocess_env()["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as ui_instance:
        assert ui_instance.get_run_by_id(run_id) is not None


# -- the README ------------------------------------------------------------------------------------------------------
def _readme_settings_rows() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The embedded stack", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_readme_table_lists_every_setting() -> None:
    rows = _readme_settings_rows()
    listed = {re.match(r"\| `([A-Z0-9_]+)`", row).group(1) for row in rows}
    missing = [setting.variable for setting in SETTINGS if setting.variable not in listed]
    assert not missing, f"README settings table misses {missing}"
    assert "\n".join(rows) == "\n".join(settings_table().splitlines()[2:]), (
        "README settings table is out of date: paste aion_assets.platform.settings.settings_table()")


def test_each_profile_writes_its_own_dagster_yaml_and_never_a_users(tmp_path: Path) -> None:
    import yaml

    from aion_assets.platform.instance import ensure_dagster_home

    home = tmp_path / "dagster"
    cluster = yaml.safe_load(ensure_dagster_home(home, "cluster").read_text())
    assert cluster["storage"]["postgres"]["postgres_url"] == {"env": "AION_DAGSTER_POSTGRES_URL"}
    assert cluster["run_coordinator"]["class"] == "QueuedRunCoordinator"
    embedded = yaml.safe_load(ensure_dagster_home(home, "embedded").read_text())  # ours: switched back
    assert embedded["storage"]["sqlite"]["base_dir"] == str(home / "storage")
    (home / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir: /mine\n")
    assert "/mine" in ensure_dagster_home(home, "cluster").read_text()  # a user's own file is left alone
