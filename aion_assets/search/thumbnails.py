"""The canonical RGB cutouts of result rows, read from their lake shards."""

from __future__ import annotations

import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import shard_dir
from aion_assets.platform.warehouse import Warehouse


def result_images(lake: Lake, warehouse: Warehouse, results: pl.DataFrame) -> list[np.ndarray]:
    """uint8 HxWx3 images of result rows (release, object_id), in the results' order."""
    if results.is_empty():
        return []
    located = warehouse.query(
        "SELECT release, object_id, shard, row FROM cutouts WHERE list_contains(?, object_id)",
        [results["object_id"].to_list()])
    located = results.select("release", "object_id").join(located, on=["release", "object_id"], how="left")
    images = []
    for row in located.iter_rows(named=True):
        array = lake.read_array(*shard_dir(row["release"], row["shard"]), "rgb.npy", mmap=True)
        images.append(np.asarray(array[row["row"]]))
    return images
