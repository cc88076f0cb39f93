"""Training images/s of the zoo group's models (``aion bench zoo``). Pure: no dagster.

Throughput does not depend on what the pixels show, so the batches are seeded random bytes of the configured
side; a warm-up step runs before timing so allocator and thread-pool start-up are excluded. Each model trains on
the same loop the assets use (AdamW, dihedral augmentation, cross-entropy).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from aion_assets.zoo.dataset import CLASSES
from aion_assets.zoo.models import DEFAULT_BASE_WIDTH, SIZES, GridPoint, build_model, count_parameters
from aion_assets.zoo.training import dihedral


def _images_per_s(model: torch.nn.Module, side: int, batch_size: int, steps: int, device: torch.device) -> float:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch_size, side, side, 3), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, len(CLASSES), (batch_size,), generator=generator)
    model = model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(model(dihedral(pixels, generator).to(device)), targets.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)


def bench_zoo(cnn_px: int = 64, encoder_px: int = 96, base_width: int = DEFAULT_BASE_WIDTH, batch_size: int = 64,
              steps: int = 10, device: str = "auto", include_encoder: bool = True) -> dict[str, Any]:
    from aion_assets.platform.devices import resolve_device
    from aion_assets.zoo.backbone import Lite0Network

    torch_device = resolve_device(device)
    figures: dict[str, Any] = {"device": str(torch_device), "batch_size": batch_size}
    for size in SIZES:
        model = build_model(GridPoint(size, "1of1"), len(CLASSES), base_width)
        figures[f"{size}_params"] = count_parameters(model)
        figures[f"{size}_images_per_s"] = _images_per_s(model, cnn_px, batch_size, steps, torch_device)
    if include_encoder:
        network = Lite0Network(len(CLASSES), encoder_px)
        figures["lite0_params"] = count_parameters(network)
        figures["lite0_images_per_s"] = _images_per_s(network, encoder_px, min(batch_size, 32), max(2, steps // 2),
                                                      torch_device)
    return figures
