"""Survey-release ingestion: readers, release planning and the `raw_cutouts` asset.

Pure modules (`readers`, `releases`, `ingest`, `bench`) never import dagster; `assets`, `checks`, `sensors` and
`defs` wire them into Dagster.
"""
