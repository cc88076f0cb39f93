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


def result_labels(warehouse: Warehouse, results: pl.DataFrame) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Published labels (name, value) per result (release, object_id); none where no release publishes any."""
    if results.is_empty() or "labels" not in warehouse.tables():
        return {}
    found = warehouse.query(
        "SELECT release, object_id, name, value FROM labels WHERE list_contains(?, object_id) ORDER BY name",
        [results["object_id"].to_list()])
    wanted = set(zip(results["release"].to_list(), results["object_id"].to_list()))
    labels: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in found.iter_rows(named=True):
        key = (row["release"], row["object_id"])
        if key in wanted:
            labels.setdefault(key, []).append((row["name"], row["value"]))
    return labels


def result_captions(warehouse: Warehouse, results: pl.DataFrame) -> list[str]:
    """One gallery caption per result row: rank, score, release, object id and its labels."""
    from aion_assets.search.gallery import result_caption

    labels = result_labels(warehouse, results)
    return [result_caption(row["rank"], row["score"], row["release"], row["object_id"],
                           labels.get((row["release"], row["object_id"]), []))
            for row in results.iter_rows(named=True)]
