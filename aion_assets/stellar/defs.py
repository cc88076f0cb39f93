import dagster as dg

from aion_assets.platform.resources import from_setting
from aion_assets.platform.settings import AionSettings
from aion_assets.stellar.assets import stellar_catalog, stellar_emulator, stellar_posteriors
from aion_assets.stellar.evaluation_assets import (
    posterior_coverage_calibrated,
    red_clump_posterior_bimodal,
    stellar_eval,
)
from aion_assets.stellar.resources import StellarDataResource


def build_defs(settings: AionSettings) -> dg.Definitions:
    return dg.Definitions(
        assets=[stellar_catalog, stellar_emulator, stellar_posteriors, stellar_eval],
        asset_checks=[posterior_coverage_calibrated, red_clump_posterior_bimodal],
        resources={"stellar_data": StellarDataResource(folder=from_setting(settings, "stellar_dir"))},
    )
