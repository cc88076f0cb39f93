"""Which torch device a training or embedding step runs on. Pure: no dagster."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is present, else the CPU; anything else as torch names it
    (``cpu``, ``cuda``, ``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
