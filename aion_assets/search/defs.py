import dagster as dg

from aion_assets.search.ablation_assets import build_ablation_assets
from aion_assets.search.assets import build_index_assets, build_training_assets
from aion_assets.search.evaluation_assets import build_evaluation_assets


def build_defs() -> dg.Definitions:
    evaluation, checks = build_evaluation_assets()
    return dg.Definitions(assets=[*build_training_assets(), *build_index_assets(), *evaluation,
                                   *build_ablation_assets()], asset_checks=checks)
