"""The scaling study's model family and its grid: small CNNs whose width sets the parameter count.

Pure torch, no dagster. A model takes uint8 RGB cutouts [B, H, W, 3] and normalises them itself, so the trainer,
the evaluator and the benchmark feed every model the same bytes (the galaxy-pretrained EfficientNet included).
Doubling the width multiplies the parameters by about four: widths 1x, 2x and 4x of the base span 16x.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

# Model size name -> width multiplier of the base width (the run config's ``base_width``).
SIZES: dict[str, int] = {"small": 1, "medium": 2, "large": 4}
# Training-set fraction keys: "1of16" is 1/16 of the train split. Keys carry no "/" or "|" (partition keys).
FRACTIONS: dict[str, Fraction] = {f"1of{d}": Fraction(1, d) for d in (16, 8, 4, 2, 1)}
DEFAULT_BASE_WIDTH = 8


@dataclass(frozen=True)
class GridPoint:
    """One cell of the study: a model size at a training-set fraction."""

    size: str
    fraction_key: str

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r}: one of {', '.join(SIZES)}")
        if self.fraction_key not in FRACTIONS:
            raise ValueError(f"unknown training fraction {self.fraction_key!r}: one of {', '.join(FRACTIONS)}")

    @property
    def fraction(self) -> Fraction:
        return FRACTIONS[self.fraction_key]

    def width(self, base_width: int = DEFAULT_BASE_WIDTH) -> int:
        return SIZES[self.size] * base_width

    def n_train(self, train_size: int) -> int:
        """How many train-split objects this cell trains on (at least one)."""
        return max(1, int(train_size * self.fraction))


class PixelNormalise(nn.Module):
    """uint8 NHWC -> float NCHW, (x/255 - mean) / std as one multiply-add, channels_last strided."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        mean_t, std_t = torch.tensor(mean).reshape(1, 3, 1, 1), torch.tensor(std).reshape(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float()
        return x * self.scale + self.shift


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class ZooCNN(nn.Module):
    """A strided stem and three conv-pool stages doubling the channels, global average pool, a linear head.

    Cheap at high resolution (the stem halves the side at once) so that the 4x-wide model still trains in
    minutes on two CPU cores at 64 px; ``features`` is the pooled representation a probe would read.
    """

    def __init__(self, n_classes: int, width: int = DEFAULT_BASE_WIDTH) -> None:
        super().__init__()
        if width < 1 or n_classes < 2:
            raise ValueError("a ZooCNN needs width >= 1 and at least two classes")
        self.width = width
        self.normalise = PixelNormalise((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        self.body = nn.Sequential(
            _conv_block(3, width, stride=2),
            _conv_block(width, 2 * width), nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width), nn.MaxPool2d(2),
            _conv_block(4 * width, 8 * width), nn.MaxPool2d(2),
            _conv_block(8 * width, 8 * width),
        )
        self.head = nn.Linear(8 * width, n_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalise(pixels)).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ZooCNN:
        """The model a saved state dict belongs to: the head's shape gives the classes and the width."""
        n_classes, features = state["head.weight"].shape
        model = cls(int(n_classes), int(features) // 8)
        model.load_state_dict(state)
        return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(point: GridPoint, n_classes: int, base_width: int = DEFAULT_BASE_WIDTH) -> ZooCNN:
    return ZooCNN(n_classes, point.width(base_width))
