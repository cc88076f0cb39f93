"""Image encoders finetuned by this project: EfficientNet-Lite0 after Galaxy Zoo supervised pretraining.

The zoo group trains them and writes each version to ``models/zoo_encoder/v<N>/`` (platform/layout.py): the
backbone in EfficientNet-Lite0's own key layout, a card (the input size it was finetuned at) and the objects it
was trained on. This module only reads those files, so the search can select a finetuned encoder by name
(``AION_IMAGE_ENCODER=zoo-lite0-v<N>``) without importing the zoo group above it. A version is always named
explicitly: the name is the encoder's artifact id, so a newer finetune never changes what an index was built with.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import polars as pl

from aion_assets.encoders.image import EfficientNetLite0Encoder
from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import (
    zoo_encoder_card_path,
    zoo_encoder_trained_on_path,
    zoo_encoder_weights_path,
)

ZOO_ENCODER_PREFIX = "zoo-lite0-v"
# The spec, or the artifact id it names (the spec and its precision).
_ZOO_SPEC = re.compile(r"^zoo-lite0-v([1-9]\d*)(-fp32|-bf16)?$")
TRAINED_ON_SCHEMA = {"release": pl.String, "object_id": pl.String, "sha256": pl.String}


class FinetunedEncoderMissing(FileNotFoundError):
    """A finetuned encoder version the lake does not hold; the message says what to materialize."""


def zoo_encoder_spec(model_version: int) -> str:
    """Version 2 of the galaxy-pretrained encoder -> ``zoo-lite0-v2``: its name as an AION_IMAGE_ENCODER value."""
    return f"{ZOO_ENCODER_PREFIX}{int(model_version)}"


def zoo_encoder_version(spec: str) -> int | None:
    """The version a ``zoo-lite0-v<N>`` spec (or its artifact id) names; None for every other encoder."""
    match = _ZOO_SPEC.match(spec.strip().lower())
    return int(match.group(1)) if match else None


class ZooEncoder(EfficientNetLite0Encoder):
    """EfficientNet-Lite0 with galaxy-pretrained weights, embedding at the side it was finetuned at."""

    def __init__(self, model_version: int, weights_path: Path, image_size: int, **options) -> None:
        super().__init__(image_size=image_size, weights_path=weights_path, **options)
        self.model_version = int(model_version)

    @property
    def name(self) -> str:
        return f"{zoo_encoder_spec(self.model_version)}-{self.image_size}px" + ("-bf16" if self.bf16 else "")


def read_card(lake: Lake, model_version: int) -> dict:
    if not lake.exists(*zoo_encoder_weights_path(model_version)):
        raise FinetunedEncoderMissing(
            f"the lake holds no galaxy-pretrained encoder v{model_version}: materialize zoo_pretrained_encoder "
            f"(its registered version numbers name it), or set AION_IMAGE_ENCODER to an encoder that exists")
    return json.loads(lake.read_bytes(*zoo_encoder_card_path(model_version)))


def load_zoo_encoder(lake: Lake, model_version: int, device: str | None = None, **options) -> ZooEncoder:
    """The version's encoder; its weights are copied out of the lake (which may be an object store)."""
    card = read_card(lake, model_version)
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "backbone.pt"
        local.write_bytes(lake.read_bytes(*zoo_encoder_weights_path(model_version)))
        return ZooEncoder(model_version, local, int(card["image_size"]), device=device, **options)


def encoder_trained_on(lake: Lake, spec: str) -> pl.DataFrame:
    """(release, object_id, sha256) of the objects an image encoder was trained on: none for the ImageNet and
    AION-1 encoders (no object of ours trained them), the zoo split's train and validation objects for a
    galaxy-pretrained one. Evaluation pools exclude them."""
    version = zoo_encoder_version(spec)
    if version is None:
        return pl.DataFrame(schema=TRAINED_ON_SCHEMA)
    read_card(lake, version)
    return lake.read_parquet(*zoo_encoder_trained_on_path(version)).select(list(TRAINED_ON_SCHEMA))
