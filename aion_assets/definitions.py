"""The Dagster code location: every domain's assets, checks, sensors and schedules over the shared stack."""

from __future__ import annotations

import dagster as dg

from aion_assets.platform.settings import apply_env_defaults

apply_env_defaults()

from aion_assets.platform.resources import platform_resources  # noqa: E402


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.Definitions(resources=platform_resources()),
    )


defs = build_definitions()
