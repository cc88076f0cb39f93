import dagster as dg

from aion_assets.zoo.assets import (
    zoo_dataset,
    zoo_models,
    zoo_pretrained_encoder,
    zoo_scaling,
    zoo_splits_disjoint_by_image,
    zoo_transfer,
)


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[zoo_dataset, zoo_models, zoo_scaling, zoo_pretrained_encoder, zoo_transfer],
        asset_checks=[zoo_splits_disjoint_by_image],
    )
