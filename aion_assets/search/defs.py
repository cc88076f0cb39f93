import dagster as dg

from aion_assets.search.assets import build_search_assets


def build_defs() -> dg.Definitions:
    assets, checks = build_search_assets()
    return dg.Definitions(assets=assets, asset_checks=checks)
