"""aion_assets: semantic search over astronomical image archives, as Dagster assets."""
