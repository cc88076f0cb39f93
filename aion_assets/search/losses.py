"""The symmetric InfoNCE (CLIP) loss used to align image and text embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_logits(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """exp(logit_scale) * image_emb @ text_emb.T: row i = image i against every text of the batch."""
    scale = torch.as_tensor(logit_scale, dtype=image_emb.dtype, device=image_emb.device).exp()
    return scale * image_emb @ text_emb.T


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies, with pair i's positive on the diagonal.

    ``image_emb`` and ``text_emb`` are [B, d], row-aligned (unit-norm in practice); ``logit_scale`` is the LOG
    of the multiplier (log(1/temperature)), already clamped by the caller.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(f"row-aligned [B, d] embeddings expected, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    logits = clip_logits(image_emb, text_emb, logit_scale)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
