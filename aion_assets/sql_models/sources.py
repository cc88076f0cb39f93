"""Which asset writes each warehouse table a SQL model may read.

A model's upstream assets come from the tables its SQL names: a table listed here depends on the asset that writes
it (None: a table with no producing asset, written by the CLI or a benchmark, so the model simply reads it), and a
table named after another model depends on that model. Any other name is an error at load time.
Domains add their tables here as they land.
"""

from __future__ import annotations

SOURCE_TABLES: dict[str, str | None] = {
    # cutouts domain: lake tables (DuckDB views over Parquet partitions)
    "cutouts": "raw_cutouts",
    "labels": "raw_cutouts",
    "quarantine": "raw_cutouts",
    # descriptions and evaluation
    "descriptions": "vlm_descriptions",
    "eval_results": "retrieval_eval",
    # written outside any asset (benchmarks, the re-ranker, the search CLI)
    "bench_results": None,
    "rerank_results": None,
    "search_log": None,
}
