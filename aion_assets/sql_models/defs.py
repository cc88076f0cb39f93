"""The SQL models' Dagster definitions: one asset per ``.sql`` file in the models folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from aion_assets.sql_models.assets import sql_model_asset
from aion_assets.sql_models.models import load_models, sql_dir
from aion_assets.sql_models.sources import SOURCE_TABLES


def build_defs(directory: Path | None = None, source_tables: Mapping[str, str | None] | None = None) -> dg.Definitions:
    """Load every model (a bad one raises SqlModelError naming its file, so the code location shows it)."""
    sources = SOURCE_TABLES if source_tables is None else source_tables
    models = load_models(directory or sql_dir(), sources)
    return dg.Definitions(assets=[sql_model_asset(model, sources) for model in models])
