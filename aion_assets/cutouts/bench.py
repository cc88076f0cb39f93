"""`aion bench ingest`: ingest a whole release (every shard) into a scratch lake and time it. Pure (no dagster)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from aion_assets.cutouts.ingest import ingest_shard, write_shard
from aion_assets.cutouts.releases import env_shard_size, load_release
from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse


def bench_ingest(release_dir: Path, warehouse: Warehouse, lake: Lake | None = None) -> dict:
    """Ingest every shard of ``release_dir`` end to end (decode, validate, write arrays and tables).

    The shards go to ``lake`` when given, else to a scratch lake that is removed afterwards, so a benchmark
    never disturbs the real tables; the figures are recorded in ``warehouse``'s ``bench_results``.
    Returns cutouts/s (catalog rows per second) and MB/s (source bytes read per second).
    """
    release_dir = Path(release_dir)
    shard_size = env_shard_size()
    with tempfile.TemporaryDirectory(prefix="aion-bench-") as scratch:
        target_lake = lake or Lake(str(Path(scratch) / "lake"))
        target_warehouse = Warehouse(Path(scratch) / "bench.duckdb", target_lake)
        started = time.perf_counter()
        release = load_release(release_dir, shard_size)
        shards = release.shard_keys(shard_size)
        accepted = quarantined = rows = source_bytes = 0
        for index in range(len(shards)):
            result = ingest_shard(release_dir, release, index, shard_size)
            write_shard(target_lake, target_warehouse, result)
            accepted += result.n_accepted
            quarantined += result.n_quarantined
            rows += result.catalog_rows
            source_bytes += result.bytes_read
        seconds = time.perf_counter() - started
    figures = {
        "release": release.name,
        "shards": len(shards),
        "cutouts": rows,
        "accepted": accepted,
        "quarantined": quarantined,
        "seconds": round(seconds, 3),
        "cutouts_per_s": rows / seconds,
        "mb_per_s": source_bytes / 1e6 / seconds,
        "source_mb": source_bytes / 1e6,
    }
    warehouse.record_bench("ingest", "cutouts_per_s", figures["cutouts_per_s"], "cutouts/s")
    warehouse.record_bench("ingest", "mb_per_s", figures["mb_per_s"], "MB/s")
    return figures
