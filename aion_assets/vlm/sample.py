"""Which cutouts get described, and the PNG of each from the canonical lake shards. Pure: no dagster.

The sample is a seeded random draw from the ingested ``cutouts`` table with no curation by label: a rare class is
in it as often as chance puts it there, which is what makes the zero-shot evaluation honest. With the recorded
describer the sample is the recorded set (itself a seeded random sample of the labelled releases) intersected
with what was ingested.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import DESCRIPTION_SAMPLE, shard_dir
from aion_assets.vlm.render import cutout_png

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
    """PNG of a cutout row from ``cutouts/<release>/<shard>/{rgb,flux}.npy``, arrays memory-mapped once per
    shard. A shard with ``flux.npy`` is rendered from the flux (the arcsinh composite), else ``rgb.npy`` as is."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._arrays: dict[tuple[str, str], tuple[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _array(self, release: str, shard: str) -> tuple[str, np.ndarray]:
        key = (release, shard)
        with self._lock:
            if key not in self._arrays:
                folder = shard_dir(release, shard)
                kind = "flux" if self.lake.exists(*folder, "flux.npy") else "rgb"
                self._arrays[key] = (kind, self.lake.read_array(*folder, f"{kind}.npy", mmap=True))
            return self._arrays[key]

    def png(self, release: str, shard: str, row: int, bands: str = "rgb") -> bytes:
        kind, array = self._array(release, shard)
        pixels = np.asarray(array[int(row)])
        return cutout_png(pixels, None if kind == "rgb" else bands)

    def loader(self, release: str, shard: str, row: int, bands: str = "rgb") -> Any:
        """A zero-argument callable for ``DescribeRequest.png``: nothing is read unless a request is sent."""
        return lambda: self.png(release, shard, row, bands)
