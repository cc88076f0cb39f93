"""Projection heads that map frozen image and text embeddings into one shared, unit-norm search space.

The architecture follows AION-Search (Koblischke et al. 2025, arXiv:2512.11982): each head L2-normalises its
input (so the scale of a foundation model's features does not matter), projects to a hidden width, applies
pre-norm residual MLP blocks and projects to the shared width, whose output is L2-normalised again so that an
inner product is a cosine similarity. A learnable log-scale (CLIP's temperature) multiplies similarities in
the contrastive loss.

Nothing here imports dagster: the search assets wrap these functions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FORMAT_VERSION = 1


@dataclass(frozen=True)
class HeadsConfig:
    """Everything needed to rebuild an :class:`AlignmentHeads` before loading its weights."""

    image_dim: int
    text_dim: int
    hidden_dim: int = 512
    out_dim: int = 256
    n_blocks: int = 2
    dropout: float = 0.1
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadsConfig:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in values.items() if key in known})


class ResidualBlock(nn.Module):
    """x + Linear(Dropout(GELU(LayerNorm(x)))): pre-norm keeps the identity path clean, so stacking is stable."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(self.dropout(F.gelu(self.norm(x))))


class ProjectionHead(nn.Module):
    """L2-normalise, Linear(in_dim -> hidden_dim), ``n_blocks`` residual blocks, Linear(hidden_dim -> out_dim),
    L2-normalise."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 256, n_blocks: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) < 1 or n_blocks < 0:
            raise ValueError(f"bad head shape: in={in_dim} hidden={hidden_dim} out={out_dim} blocks={n_blocks}")
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.input = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_dim, dropout) for _ in range(n_blocks))
        self.output = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(F.normalize(x, dim=-1))
        for block in self.blocks:
            h = block(h)
        return F.normalize(self.output(h), dim=-1)


class AlignmentHeads(nn.Module):
    """An image head, a text head and the learnable log logit-scale of the symmetric InfoNCE loss.

    ``logit_scale`` holds log(1/temperature), initialised to log(1/0.07); :meth:`scale` returns it clamped at
    log(``max_logit_scale``) so exp(scale) never exceeds 100, which keeps the loss from collapsing onto a few
    hard pairs (as in CLIP).
    """

    def __init__(self, image_dim: int, text_dim: int, hidden_dim: int = 512, out_dim: int = 256,
                 n_blocks: int = 2, dropout: float = 0.1, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.config = HeadsConfig(image_dim, text_dim, hidden_dim, out_dim, n_blocks, dropout,
                                  init_temperature, max_logit_scale)
        self.image_head = ProjectionHead(image_dim, hidden_dim, out_dim, n_blocks, dropout)
        self.text_head = ProjectionHead(text_dim, hidden_dim, out_dim, n_blocks, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature), dtype=torch.float32))
        self.max_log_scale = math.log(max_logit_scale)

    @classmethod
    def from_config(cls, config: HeadsConfig) -> AlignmentHeads:
        return cls(**config.to_dict())

    def scale(self) -> torch.Tensor:
        """The log logit-scale actually used, clamped so exp(scale) <= max_logit_scale."""
        return self.logit_scale.clamp(max=self.max_log_scale)

    def clamp_(self) -> None:
        """Clamp the stored parameter too (after an optimiser step), so it cannot drift far past the cap."""
        with torch.no_grad():
            self.logit_scale.clamp_(max=self.max_log_scale)

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.scale()).detach())

    def encode_image(self, image_base: torch.Tensor) -> torch.Tensor:
        return self.image_head(image_base)

    def encode_text(self, text_base: torch.Tensor) -> torch.Tensor:
        return self.text_head(text_base)

    def forward(self, image_base: torch.Tensor, text_base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_head(image_base), self.text_head(text_base)


class HeadsEnsemble(nn.Module):
    """Several seeds' heads as one model: an object's vector is its members' unit vectors concatenated and scaled
    by 1/sqrt(K), so it is unit-norm again and an inner product is the MEAN of the members' cosines.

    At a few thousand descriptions the seeds disagree a lot (see search_ablations); averaging their scores
    ranks better than keeping the best seed by validation, at K times the vector width. It stands in for
    :class:`AlignmentHeads` everywhere heads are applied (``config.out_dim`` is the concatenated width)."""

    def __init__(self, members: list[AlignmentHeads]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len({m.config for m in members}) != 1:
            raise ValueError("ensemble members must share one configuration")
        self.members = nn.ModuleList(members)
        self.member_config = members[0].config
        self.config = HeadsConfig(**{**self.member_config.to_dict(),
                                     "out_dim": self.member_config.out_dim * len(members)})

    @property
    def temperature(self) -> float:
        return float(sum(m.temperature for m in self.members) / len(self.members))

    def _joined(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))

    def encode_image(self, image_base: torch.Tensor) -> torch.Tensor:
        return self._joined([m.encode_image(image_base) for m in self.members])

    def encode_text(self, text_base: torch.Tensor) -> torch.Tensor:
        return self._joined([m.encode_text(text_base) for m in self.members])


Heads = AlignmentHeads | HeadsEnsemble


def heads_from_state(state: dict[str, torch.Tensor], config: HeadsConfig | dict[str, Any]) -> AlignmentHeads:
    """Rebuild heads from a state dict (e.g. ``TrainResult.best_state``) and their config; returned in eval mode."""
    config = config if isinstance(config, HeadsConfig) else HeadsConfig.from_dict(config)
    model = AlignmentHeads.from_config(config)
    model.load_state_dict(state)
    return model.eval()


def save_heads(model: Heads, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write weights and config to ONE safetensors file (config as JSON in the header metadata; an ensemble's is
    its members' config, with their number).

    ``extra_metadata`` (strings only) travels in the same header, e.g. the MLflow run id or input data versions.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.member_config if isinstance(model, HeadsEnsemble) else model.config
    metadata = {"format": "aion-search-heads", "format_version": str(FORMAT_VERSION),
                "config": json.dumps(config.to_dict())}
    if isinstance(model, HeadsEnsemble):
        metadata["ensemble_members"] = str(len(model.members))
    metadata.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    staging = path.with_name(path.name + ".tmp")
    save_file(state, str(staging), metadata=metadata)
    staging.replace(path)
    return path


def read_heads_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a saved heads file (config JSON and any extra metadata), without loading weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_heads(path: str | Path, device: str | torch.device = "cpu") -> Heads:
    """Load heads (or an ensemble) written by :func:`save_heads`; returned in eval mode on ``device``."""
    from safetensors.torch import load_file

    metadata = read_heads_metadata(path)
    if metadata.get("format") != "aion-search-heads" or "config" not in metadata:
        raise ValueError(f"{path} is not an aion-search heads file (no config in its metadata)")
    config = HeadsConfig.from_dict(json.loads(metadata["config"]))
    state = load_file(str(path))
    if "ensemble_members" not in metadata:
        return heads_from_state(state, config).to(device)
    model = HeadsEnsemble([AlignmentHeads.from_config(config) for _ in range(int(metadata["ensemble_members"]))])
    model.load_state_dict(state)
    return model.eval().to(device)
