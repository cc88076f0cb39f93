"""The Dagster code location: every domain's assets, checks, sensors and schedules over the shared stack."""

from __future__ import annotations

import dagster as dg

from aion_assets.platform.settings import apply_env_defaults

apply_env_defaults()

from aion_assets.cutouts.defs import build_defs as cutouts_defs  # noqa: E402
from aion_assets.encoders.defs import build_defs as encoders_defs  # noqa: E402
from aion_assets.platform.resources import platform_resources  # noqa: E402
from aion_assets.search.defs import build_defs as search_defs  # noqa: E402
from aion_assets.sql_models.defs import build_defs as sql_defs  # noqa: E402
from aion_assets.vlm.defs import build_defs as vlm_defs  # noqa: E402

# Declarative automation is on from the start: a shard the release sensor ingests is embedded as it lands,
# and the indexes rebuild on their daily cron (the conditions live on the assets themselves).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "aion_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)


def build_definitions() -> dg.Definitions:
    """Built anew on each call so that a changed setting (a model, a describer) shows in the code versions."""
    return dg.Definitions.merge(
        dg.Definitions(resources=platform_resources()),
        cutouts_defs(),
        vlm_defs(),
        encoders_defs(),
        search_defs(),
        sql_defs(),
        dg.Definitions(sensors=[automation_sensor]),
    )


defs = build_definitions()
