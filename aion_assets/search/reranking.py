"""Re-ranking search results with the VLM: one path for `aion search --rerank` and for `retrieval_eval`."""

from __future__ import annotations

from typing import Any

import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse
from aion_assets.search.thumbnails import result_images
from aion_assets.vlm.render import png_bytes
from aion_assets.vlm.rerank import RerankRow, rerank, save_rerank


def rerank_results(lake: Lake, warehouse: Warehouse, query: str, results: pl.DataFrame, samples: int = 1,
                   log: Any | None = None) -> list[RerankRow]:
    """The VLM judges each result (release, object_id, score) in order; the run is stored in rerank_results.
    Rows come back sorted by their new rank."""
    images = result_images(lake, warehouse, results)
    candidates = [(r["release"], r["object_id"], float(r["score"]), png_bytes(image))
                  for r, image in zip(results.iter_rows(named=True), images)]
    rows = rerank(query, candidates, samples=samples, log=log)
    save_rerank(warehouse, rows)
    return sorted(rows, key=lambda row: row.rank_after)


def reranked_results(lake: Lake, warehouse: Warehouse, query: str, results: pl.DataFrame,
                     samples: int = 1) -> pl.DataFrame:
    """``results`` re-ordered by the VLM's scores (1-10, averaged over samples), in the search contract's
    columns (rank, object_id, release, score); the run lands in rerank_results."""
    rows = rerank_results(lake, warehouse, query, results, samples=samples)
    return pl.DataFrame(
        [{"rank": r.rank_after, "object_id": r.object_id, "release": r.release,
          "score": float(r.score) if r.score is not None else 0.0} for r in rows],
        schema={"rank": pl.Int64, "object_id": pl.String, "release": pl.String, "score": pl.Float64},
    ).sort("rank")
