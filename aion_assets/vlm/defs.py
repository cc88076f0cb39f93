"""The descriptions domain's definitions: assets and the describer resource they are built from."""

from __future__ import annotations

import dagster as dg

from aion_assets.vlm.assets import build_vlm_assets
from aion_assets.vlm.resources import DescriberResource, describer_resource


def build_defs(describer: DescriberResource | None = None) -> dg.Definitions:
    describer = describer or describer_resource()
    return dg.Definitions(assets=build_vlm_assets(describer), resources={"describer": describer})
