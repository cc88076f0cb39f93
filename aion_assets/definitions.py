"""The Dagster code location: every domain's assets, checks, sensors and schedules over the shared stack.

Loading reads the settings (platform/settings.py) and writes nothing: no environment variable, no file.
"""

from __future__ import annotations

import dagster as dg

from aion_assets.cutouts.defs import build_defs as cutouts_defs
from aion_assets.encoders.defs import build_defs as encoders_defs
from aion_assets.platform.resources import platform_resources
from aion_assets.platform.settings import get_settings
from aion_assets.search.defs import build_defs as search_defs
from aion_assets.sql_models.defs import build_defs as sql_defs
from aion_assets.stellar.defs import build_defs as stellar_defs
from aion_assets.vlm.defs import build_defs as vlm_defs
from aion_assets.zoo.defs import build_defs as zoo_defs


# Declarative automation is on from the start: a shard the release sensor ingests is embedded as it lands,
# and the indexes rebuild on their daily cron (the conditions live on the assets themselves).
def automation_sensor(interval_s: int) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "aion_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_s,
    )


def step_executor(name: str) -> dg.ExecutorDefinition | None:
    """The executor the settings name (None: Dagster's default). ``k8s`` puts each step in its own pod, with the
    pod spec a step's ``dagster-k8s/config`` tag asks for (platform/k8s.py: a GPU for pool ``gpu``)."""
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return {"multiprocess": dg.multiprocess_executor, "in_process": dg.in_process_executor}.get(name)


def build_definitions() -> dg.Definitions:
    """Built anew on each call so that a changed setting (a model, a describer) shows in the code versions.

    A setting that cannot be used (e.g. AION_PROFILE=cluster without AION_LAKE_ROOT) fails here, at load time,
    with a SettingsError naming the variable."""
    settings = get_settings()
    return dg.Definitions.merge(
        dg.Definitions(resources=platform_resources(settings)),
        cutouts_defs(settings.sensor_interval_s),
        vlm_defs(),
        encoders_defs(),
        search_defs(),
        stellar_defs(settings),
        zoo_defs(),
        sql_defs(),
        dg.Definitions(sensors=[automation_sensor(settings.sensor_interval_s)], executor=step_executor(settings.step_executor)),
    )


defs = build_definitions()
