"""The PNG a vision-language model sees of a cutout: its canonical ``rgb.npy`` row, losslessly.

There is one image of each cutout, made at ingestion (:mod:`aion_assets.cutouts.readers`): RGB JPEG/PNG sources
keep their pixels (the recorded answers were made from exactly those), and a multi-band flux cutout (FITS, HDF5)
is rendered there once, by ``flux_to_rgb``, with fixed parameters. The describer, the re-ranker, the galleries and
the image encoder all read that same row, so nothing here renders flux again.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG (lossless: the model sees exactly these pixels)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
