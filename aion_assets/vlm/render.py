"""Render a canonical cutout into the PNG a vision-language model sees.

RGB sources (uint8 [H, W, 3], JPEG composites of the sample releases) go through as they are: the recorded answers
were made from exactly these pixels.

Multi-band flux cutouts (float32 [C, H, W], e.g. Legacy Survey g, r, z in nanomaggies) become a colour composite
with the arcsinh stretch of Lupton et al. (2004, PASP 116, 133), which keeps the colour of bright cores instead of
saturating them to white:

- bands -> channels: z -> red, r -> green, g -> blue (redder band, redder channel). With other band sets the
  reddest, middle and bluest bands of the order given are used; a single band is grey.
- band scales (multiplied into the flux first, they balance the sky-subtracted fluxes so a typical galaxy is
  neutral-to-warm): g 6.0, r 3.4, z 2.2 — the Legacy Survey viewer's values; 1.0 for bands not listed.
- intensity I = mean of the three scaled channels; each channel is multiplied by f(I) / I with
  f(x) = asinh(Q * x / stretch) / Q, Q = 8 (softening: larger Q, harsher compression of bright parts),
  stretch = 0.5 (the linear range of the scaled flux).
- negative sky noise is clipped to 0; a pixel whose largest channel exceeds 1 is divided by it (saturate to
  colour, Lupton's prescription), then the image is quantised to uint8.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

DEFAULT_BAND_SCALES: Mapping[str, float] = {"g": 6.0, "r": 3.4, "i": 2.8, "z": 2.2}


@dataclass(frozen=True)
class LuptonParams:
    q: float = 8.0
    stretch: float = 0.5
    band_scales: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BAND_SCALES))


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG (lossless: the model sees exactly these pixels)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _channel_bands(bands: Sequence[str]) -> tuple[int, int, int]:
    """Indexes of the (red, green, blue) bands."""
    names = [b.strip().lower() for b in bands]
    if all(b in names for b in ("g", "r", "z")):
        return names.index("z"), names.index("r"), names.index("g")
    if len(names) == 1:
        return 0, 0, 0
    # Bands are listed blue to red by convention: reddest -> red, middle -> green, bluest -> blue.
    return len(names) - 1, len(names) // 2, 0


def lupton_composite(flux: np.ndarray, bands: Sequence[str], params: LuptonParams | None = None) -> np.ndarray:
    """float [C, H, W] flux -> uint8 [H, W, 3] arcsinh colour composite (parameters in the module docstring)."""
    params = params or LuptonParams()
    if flux.ndim != 3 or flux.shape[0] != len(bands):
        raise ValueError(f"flux shape {flux.shape} does not match bands {list(bands)}")
    red, green, blue = _channel_bands(bands)
    names = [b.strip().lower() for b in bands]
    channels = np.stack([
        np.nan_to_num(np.asarray(flux[i], dtype=np.float64)) * params.band_scales.get(names[i], 1.0)
        for i in (red, green, blue)
    ], axis=-1)
    channels = np.clip(channels, 0.0, None)
    intensity = channels.mean(axis=-1, keepdims=True)
    stretched = np.arcsinh(params.q * intensity / params.stretch) / params.q
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(intensity > 0, stretched / intensity, 0.0)
    image = channels * ratio
    peak = image.max(axis=-1, keepdims=True)
    image = np.where(peak > 1.0, image / np.maximum(peak, 1e-12), image)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def cutout_png(array: np.ndarray, bands: Sequence[str] | str | None = None, params: LuptonParams | None = None) -> bytes:
    """A canonical cutout row -> PNG: uint8 [H, W, 3] as it is, float [C, H, W] through the Lupton composite."""
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
        return png_bytes(array)
    if isinstance(bands, str):
        bands = [b for b in bands.replace(" ", "").split(",") if b] if "," in bands else list(bands)
    if not bands:
        raise ValueError("a flux cutout needs its band names (e.g. 'g,r,z')")
    return png_bytes(lupton_composite(array, bands, params))
