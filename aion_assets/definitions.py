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


def build_definitions() -> dg.Definitions:
    """Built anew on each call so that a changed setting (a model, a describer) shows in the code versions."""
    return dg.Definitions.merge(
        dg.Definitions(resources=platform_resources()),
        cutouts_defs(),
        vlm_defs(),
        encoders_defs(),
        search_defs(),
        sql_defs(),
    )


defs = build_definitions()
