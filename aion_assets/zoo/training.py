"""Supervised training on volunteer majority classes, early-stopped on validation loss. Pure torch, no dagster.

Every model here takes uint8 NHWC pixels and normalises them itself (see ``models.PixelNormalise``), so one loop
trains the scaling study's CNNs and finetunes EfficientNet-Lite0 alike. Augmentation is the dihedral group (flips
and quarter turns): a galaxy has no preferred orientation, and with the two spiral senses merged into one class
no label changes under a flip.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 20  # evaluation rounds, each one epoch or more (see min_round_steps)
    patience: int = 3  # rounds without a lower validation loss before stopping
    # A round is at least this many optimiser steps: on 1/16 of the data an epoch is a handful of steps, too few
    # for the weights (and BatchNorm's running statistics) to move, and early stopping would judge noise.
    min_round_steps: int = 25
    # The learning rate drops by lr_factor after a round without a lower validation loss: at a constant rate the
    # BatchNorm statistics lag the weights and the validation loss jumps round to round (measured: 0.63 -> 2.7).
    lr_factor: float = 0.3
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256


@dataclass
class TrainResult:
    model: nn.Module  # the weights of the epoch with the lowest validation loss
    best_epoch: int
    epochs_run: int
    best_validation_loss: float
    seconds: float
    images_seen: int
    curves: list[dict] = field(default_factory=list)  # per round: epoch (epochs so far), train_loss, validation_loss

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else 0.0


def dihedral(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random element of the dihedral group D4 applied to a whole NHWC batch (cheap: a view and a copy)."""
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    out = torch.rot90(pixels, turns, dims=(1, 2))
    return out.flip(2) if flip else out


@torch.no_grad()
def predict_logits(model: nn.Module, pixels: torch.Tensor, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Logits [N, C] of uint8 NHWC pixels, in eval mode, in batches."""
    model.eval()
    parts = [model(pixels[start:start + batch_size].to(device)).float().cpu()
             for start in range(0, len(pixels), batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, 0))


def error_rate(logits: torch.Tensor, classes: torch.Tensor) -> float:
    """1 - accuracy of the argmax class."""
    return float((logits.argmax(dim=1) != classes).float().mean())


def classification_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy and error rate."""
    return {"loss": float(F.cross_entropy(logits, targets)), "error": error_rate(logits, targets)}


def train_classifier(
    model: nn.Module,
    train_pixels: torch.Tensor,
    train_targets: torch.Tensor,
    validation_pixels: torch.Tensor,
    validation_targets: torch.Tensor,
    config: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> TrainResult:
    """AdamW over shuffled mini-batches; after each round (one epoch, or as many as make ``min_round_steps``)
    the validation loss decides which weights are kept and whether to stop. ``loss_fn`` (logits, targets):
    cross-entropy by default; a regression passes MSE. ``best_epoch`` counts epochs."""
    if len(train_pixels) == 0 or len(validation_pixels) == 0:
        raise ValueError("training needs at least one train and one validation image")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = model.to(config.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=config.lr_factor, patience=0)
    best_state, best_loss, best_epoch, stale = copy.deepcopy(model.state_dict()), float("inf"), 0, 0
    curves: list[dict] = []
    images_seen, started = 0, time.perf_counter()
    steps_per_epoch = max(1, -(-len(train_pixels) // config.batch_size))
    epochs_per_round = max(1, -(-config.min_round_steps // steps_per_epoch))
    epoch = 0
    for _ in range(config.max_epochs):
        model.train()
        losses = []
        for _ in range(epochs_per_round):
            epoch += 1
            order = torch.randperm(len(train_pixels), generator=generator)
            for start in range(0, len(order), config.batch_size):
                index = order[start:start + config.batch_size]
                if len(index) < 2 and len(order) > 1:
                    continue  # BatchNorm cannot train on one image
                pixels = train_pixels[index]
                if config.augment:
                    pixels = dihedral(pixels, generator)
                loss = loss_fn(model(pixels.to(config.device)), train_targets[index].to(config.device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
                images_seen += len(index)
        logits = predict_logits(model, validation_pixels, config.eval_batch_size, config.device)
        validation_loss = float(loss_fn(logits, validation_targets))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "validation_loss": validation_loss, "learning_rate": optimiser.param_groups[0]["lr"]}
        plateau.step(validation_loss)
        curves.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if validation_loss < best_loss - 1e-6:
            best_loss, best_epoch, stale = validation_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, epoch, best_loss, time.perf_counter() - started, images_seen, curves)
