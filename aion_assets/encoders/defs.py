import dagster as dg

from aion_assets.encoders.assets import build_embedding_assets
from aion_assets.encoders.resources import encoder_resources


def build_defs() -> dg.Definitions:
    return dg.Definitions(assets=build_embedding_assets(), resources=encoder_resources())
