"""The embed benchmark on a few real cutouts: it streams every cutout and its figures are consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from aion_assets.encoders.bench import _split_rounds, bench_embed
from aion_assets.encoders.image import EfficientNetLite0Encoder
from aion_assets.platform.lake import Lake


@pytest.fixture(scope="module")
def real_shards(sample_releases: Path) -> list[np.ndarray]:
    release = sample_releases / "gz1-sdss"
    catalog = pl.read_csv(release / "catalog.csv", infer_schema_length=0).slice(100, 12)
    images = np.stack([np.asarray(Image.open(release / p).convert("RGB").resize((160, 160))) for p in catalog["image"]])
    return [images[:7], images[7:]]


def test_rounds_split_keeps_every_cutout_in_order() -> None:
    arrays = [np.arange(7), np.arange(7, 10), np.arange(10, 20)]
    groups = _split_rounds(arrays, 3)
    assert len(groups) == 3
    assert np.concatenate([np.concatenate(g) for g in groups]).tolist() == list(range(20))
    assert [sum(len(a) for a in g) for g in groups] == [7, 7, 6]


def test_bench_embed_in_memory_and_from_the_lake(real_shards: list[np.ndarray], lake: Lake) -> None:
    encoder = EfficientNetLite0Encoder(device="cpu", num_threads=2)
    result = bench_embed(encoder, real_shards, batch_size=4, rounds=2)
    assert result["cutouts"] == 12 and result["rounds"] == 2 and result["batch_size"] == 4
    assert result["encoder"] == encoder.name and result["input_kind"] == "rgb"
    assert result["end_to_end_per_s"] == pytest.approx(12 / result["end_to_end_s"])
    assert result["ratio"] == pytest.approx(result["end_to_end_per_s"] / result["forward_per_s"])
    assert result["forward_per_s"] > 0 and 0 < result["forward_share"] <= 1

    for i, shard in enumerate(real_shards):
        lake.write_array(shard, "cutouts", "gz1-sdss", f"{i:04d}", "rgb.npy")
    from_lake = bench_embed(encoder, lake=lake, partition_keys=["gz1-sdss|0000", "gz1-sdss|0001"], batch_size=6,
                            rounds=1)
    assert from_lake["cutouts"] == 12 and from_lake["rounds"] == 1
    with pytest.raises(ValueError, match="either shards, or lake"):
        bench_embed(encoder)
