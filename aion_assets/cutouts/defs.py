"""The cutouts domain's Dagster definitions: raw_cutouts, its checks, the release sensor, schedule and job."""

from __future__ import annotations

import dagster as dg

from aion_assets.cutouts.assets import raw_cutouts
from aion_assets.cutouts.checks import cutouts_checks
from aion_assets.cutouts.sensors import (
    build_release_sensor,
    daily_release_check,
    ingest_job,
    register_release_partitions,
)
from aion_assets.platform.settings import DEFAULT_SENSOR_INTERVAL_S

__all__ = ["build_defs", "register_release_partitions"]


def build_defs(sensor_interval_s: int = DEFAULT_SENSOR_INTERVAL_S) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_cutouts],
        asset_checks=cutouts_checks,
        sensors=[build_release_sensor(sensor_interval_s)],
        schedules=[daily_release_check],
        jobs=[ingest_job],
    )
