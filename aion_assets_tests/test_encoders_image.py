"""The EfficientNet-Lite0 image encoder on real sample cutouts, and the streaming batched inference helper."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from aion_assets.encoders.image import (
    EfficientNetLite0Encoder,
    ImageEncoder,
    embed_array,
    embed_shards,
    iter_lake_cutouts,
    load_image_encoder,
)
from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey


def _decode(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if image.size != (160, 160):
        image = image.resize((160, 160), Image.BILINEAR)
    return np.asarray(image)


@pytest.fixture(scope="module")
def cutouts(sample_releases: Path) -> np.ndarray:
    """16 real gz1-sdss cutouts as the canonical uint8 [N, 160, 160, 3]."""
    release = sample_releases / "gz1-sdss"
    catalog = pl.read_csv(release / "catalog.csv", infer_schema_length=0).head(16)
    return np.stack([_decode(release / image) for image in catalog["image"]])


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(device="cpu", num_threads=2)


def _assert_close_rows(a: np.ndarray, b: np.ndarray) -> None:
    # Batch-size-dependent kernels reorder float sums; the difference is rounding, far below feature scale.
    assert a.shape == b.shape
    scale = float(np.abs(b).max()) if b.size else 1.0
    np.testing.assert_allclose(a, b, atol=2e-4 * scale, rtol=0)


def test_encoder_outputs_pooled_1280d_features(encoder: EfficientNetLite0Encoder, cutouts: np.ndarray) -> None:
    assert isinstance(encoder, ImageEncoder)
    assert encoder.input_kind == "rgb" and encoder.dim == 1280
    assert encoder.name == "efficientnet-lite0-imagenet-160px"
    features = encoder.encode_batch(cutouts[:6])
    assert features.shape == (6, 1280) and features.dtype == np.float32
    assert np.isfinite(features).all()
    # ReLU6 features averaged over the map: in [0, 6] and not all dead.
    assert features.min() >= 0.0 and features.max() <= 6.0 and (features > 0).mean() > 0.3
    # Different galaxies give different embeddings.
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    off_diagonal = (unit @ unit.T)[~np.eye(6, dtype=bool)]
    assert off_diagonal.max() < 0.999


def test_deterministic_and_batch_invariant(encoder: EfficientNetLite0Encoder, cutouts: np.ndarray) -> None:
    batch = encoder.encode_batch(cutouts[:8])
    np.testing.assert_array_equal(encoder.encode_batch(cutouts[:8]), batch)
    alone = encoder.encode_batch(cutouts[3:4])
    _assert_close_rows(alone[0], batch[3])
    # Also inside a differently composed batch.
    mixed = encoder.encode_batch(cutouts[[9, 3, 12]])
    _assert_close_rows(mixed[1], batch[3])


def test_batchnorm_folding_keeps_the_network(encoder: EfficientNetLite0Encoder, cutouts: np.ndarray) -> None:
    plain = EfficientNetLite0Encoder(device="cpu", fuse_batchnorm=False, channels_last=False)
    _assert_close_rows(encoder.encode_batch(cutouts[:4]), plain.encode_batch(cutouts[:4]))


def test_other_input_sizes_are_resized(cutouts: np.ndarray) -> None:
    small = EfficientNetLite0Encoder(image_size=128, device="cpu")
    assert small.name == "efficientnet-lite0-imagenet-128px"
    features = small.encode_batch(cutouts[:2])
    assert features.shape == (2, 1280) and np.isfinite(features).all()
    with pytest.raises(ValueError, match="uint8"):
        small.encode_batch(cutouts[:2].astype(np.float32))
    assert small.encode_batch(cutouts[:0]).shape == (0, 1280)


def test_load_image_encoder_caches(encoder: EfficientNetLite0Encoder) -> None:
    first = load_image_encoder("efficientnet-lite0", device="cpu")
    assert load_image_encoder("lite0", device="cpu") is not None
    assert load_image_encoder("efficientnet-lite0", device="cpu") is first
    with pytest.raises(ValueError, match="unknown image encoder"):
        load_image_encoder("resnet50")


def test_streaming_preserves_order_and_count(encoder: EfficientNetLite0Encoder, cutouts: np.ndarray) -> None:
    reference = encoder.encode_batch(cutouts)
    sizes = [5, 0, 3, 8]
    starts = np.cumsum([0, *sizes])
    shards = [cutouts[starts[i]:starts[i + 1]] for i in range(len(sizes))]
    outputs = list(embed_shards(encoder, iter(shards), batch_size=3, prefetch=2))
    assert [len(o) for o in outputs] == sizes
    for i, out in enumerate(outputs):
        assert out.shape == (sizes[i], 1280)
        _assert_close_rows(out, reference[starts[i]:starts[i + 1]])
    # Preprocessing in the reader thread gives the same result.
    inline = list(embed_shards(encoder, shards, batch_size=4, preprocess_in_background=True))
    _assert_close_rows(np.concatenate(inline), reference)
    _assert_close_rows(embed_array(encoder, cutouts[:7], batch_size=2), reference[:7])


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "embed-prefetch" and t.is_alive()]


def test_streaming_raises_reader_errors_and_stops(encoder: EfficientNetLite0Encoder, cutouts: np.ndarray) -> None:
    def failing() -> Iterator[np.ndarray]:
        yield cutouts[:2]
        raise OSError("shard 0001 unreadable")

    stream = embed_shards(encoder, failing(), batch_size=2)
    assert len(next(stream)) == 2
    with pytest.raises(OSError, match="shard 0001 unreadable"):
        next(stream)
    # A consumer that stops early does not leave the reader thread behind.
    early = embed_shards(encoder, [cutouts[:2]] * 20, batch_size=2, prefetch=1)
    next(early)
    early.close()
    assert not _prefetch_threads()


def test_lake_shards_stream_from_memory_maps(lake: Lake, encoder: EfficientNetLite0Encoder,
                                             cutouts: np.ndarray) -> None:
    lake.write_array(cutouts[:6], "cutouts", "gz1-sdss", "0000", "rgb.npy")
    lake.write_array(cutouts[6:10], "cutouts", "gz1-sdss", "0001", "rgb.npy")
    keys = ["gz1-sdss|0000", "gz1-sdss|0001"]
    arrays = list(iter_lake_cutouts(lake, keys, "rgb"))
    assert isinstance(arrays[0], np.memmap) and [len(a) for a in arrays] == [6, 4]
    outputs = list(embed_shards(encoder, iter_lake_cutouts(lake, keys, "rgb"), batch_size=4))
    _assert_close_rows(np.concatenate(outputs), encoder.encode_batch(cutouts[:10]))
    assert ShardKey.parse("gz1-sdss|0001") == ShardKey("gz1-sdss", "0001")
    assert str(ShardKey.parse("gz1-sdss|0001")) == "gz1-sdss|0001"
    with pytest.raises(ValueError):
        ShardKey.parse("gz1-sdss")
    assert torch.get_num_threads() <= 2
