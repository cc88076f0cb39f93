"""Which cutouts get described, and the PNG of each from the canonical lake shards. Pure: no dagster.

The sample is a seeded random draw from the ingested ``cutouts`` table with no curation by label: a rare class is
in it as often as chance puts it there, which is what makes the zero-shot evaluation honest. With the recorded
describer the sample is the recorded set (seeded random samples, one per recorded pass) intersected with what
was ingested.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import DESCRIPTION_SAMPLE, ShardKey, shard_dir
from aion_assets.vlm.render import png_bytes

SAMPLE_PATH = DESCRIPTION_SAMPLE
SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "object_id": pl.Utf8, "release": pl.Utf8, "sha256": pl.Utf8, "shard": pl.Utf8, "row": pl.Int32,
    "bands": pl.Utf8,
}


def draw_sample(cutouts: pl.DataFrame, size: int, seed: int, recorded: pl.DataFrame | None = None) -> pl.DataFrame:
    """(object_id, release, sha256, shard, row, bands) of the objects to describe, sorted by release, object_id.

    ``recorded``: (release, object_id) of recorded answers; when given, the sample is exactly those that were
    ingested, and ``size`` / ``seed`` do not apply (the recorded set already is a seeded random sample)."""
    if "bands" not in cutouts.columns:
        cutouts = cutouts.with_columns(pl.lit("rgb").alias("bands"))
    # Sorting first makes the draw depend only on the seed and the set of objects, not on file order.
    base = (cutouts.select(list(SAMPLE_SCHEMA)).cast(SAMPLE_SCHEMA)
            .unique(["release", "object_id"], keep="first").sort(["release", "object_id"]))
    if recorded is not None:
        chosen = base.join(recorded.select("release", "object_id"), on=["release", "object_id"], how="semi")
    else:
        chosen = base.sample(n=min(size, base.height), seed=seed, shuffle=True) if size < base.height else base
    return chosen.sort(["release", "object_id"])


class ShardImages:
    """PNG of a cutout row from ``cutouts/<release>/<shard>/rgb.npy``, the array memory-mapped once per shard.

    ``rgb.npy`` is the one image of every cutout (a flux source's is rendered at ingestion), so the describer sees
    exactly what the galleries, the re-ranker and the image encoder see.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._arrays: dict[ShardKey, np.ndarray] = {}
        self._lock = threading.Lock()

    def _rgb(self, key: ShardKey) -> np.ndarray:
        with self._lock:
            if key not in self._arrays:
                self._arrays[key] = self.lake.read_array(*shard_dir(key.release, key.shard), "rgb.npy", mmap=True)
            return self._arrays[key]

    def png(self, release: str, shard: str, row: int) -> bytes:
        return png_bytes(np.asarray(self._rgb(ShardKey(release, shard))[int(row)]))

    def loader(self, release: str, shard: str, row: int) -> Callable[[], bytes]:
        """A zero-argument callable for ``DescribeRequest.png``: nothing is read unless a request is sent."""
        return lambda: self.png(release, shard, row)
