"""Pure encoders (no Dagster): text, image (EfficientNet-Lite0), AION-1 for flux cutouts, and the embed benchmark.

Submodules import torch and model packages only when used, so importing this package stays cheap; import
from the submodules directly: ``from aion_assets.encoders.image import EfficientNetLite0Encoder``.
"""

from __future__ import annotations

__all__ = ["aion1", "bench", "image", "text"]
