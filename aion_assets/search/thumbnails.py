"""The canonical RGB cutouts of result rows, read from their lake shards.

``rgb.npy`` is the one image of a cutout (a flux source's is rendered at ingestion): galleries and the re-ranker
show exactly what the describer and the image encoder saw.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey, shard_dir
from aion_assets.platform.warehouse import Warehouse


def result_images(lake: Lake, warehouse: Warehouse, results: pl.DataFrame) -> list[np.ndarray]:
    """uint8 HxWx3 images of result rows (release, object_id), in the results' order."""
    if results.is_empty():
        return []
    located = warehouse.query(
        "SELECT release, object_id, shard, row FROM cutouts WHERE list_contains(?, object_id)",
        [results["object_id"].to_list()])
    located = results.select("release", "object_id").join(located, on=["release", "object_id"], how="left")
    shards: dict[ShardKey, np.ndarray] = {}  # one memory map per shard, however many of its rows are shown
    images = []
    for row in located.iter_rows(named=True):
        key = ShardKey(row["release"], row["shard"])
        if key not in shards:
            shards[key] = lake.read_array(*shard_dir(key.release, key.shard), "rgb.npy", mmap=True)
        images.append(np.asarray(shards[key][row["row"]]))
    return images
