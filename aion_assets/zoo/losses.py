"""The Galaxy Zoo Dirichlet-multinomial loss over a decision tree of questions.

Why this loss (after Walmsley et al. 2022, 2024): Galaxy Zoo volunteers do not label a galaxy with one class; they
answer a *tree* of questions ("smooth or featured?", then, only for featured galaxies, "edge-on?", ...). For one
galaxy and one question the data are multinomial counts over that question's answers, and the total number of
volunteers who answered is itself uncertain: it varies from galaxy to galaxy and, for follow-up questions, depends
on earlier answers. The model therefore predicts, per question, Dirichlet concentrations α over the answers; the
likelihood of the observed counts is the Dirichlet-multinomial (a multinomial whose probabilities are Dirichlet
distributed), which rewards confident predictions only when many volunteers agree and stays forgiving when few
voted. The loss is the negative log-likelihood summed over the tree's questions. A question nobody was asked (zero
total votes) has likelihood 1 whatever the prediction, so it contributes exactly nothing, and no gradient.

Pure torch/numpy: no pipeline imports here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "GZ1_TREE",
    "GZ_DECALS_SMOOTH_FEATURED_TREE",
    "DecisionTree",
    "Question",
    "concentrations_from_logits",
    "dirichlet_multinomial_log_prob",
    "dirichlet_multinomial_loss",
    "majority_class_cross_entropy",
    "vote_fractions",
]


@dataclass(frozen=True)
class Question:
    """One question of a decision tree and its possible answers, in column order."""

    name: str
    answers: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a question needs a non-empty name")
        if not self.answers:
            raise ValueError(f"question {self.name!r} has no answers")
        if any(not a for a in self.answers):
            raise ValueError(f"question {self.name!r} has an empty answer name")
        duplicates = sorted({a for a in self.answers if self.answers.count(a) > 1})
        if duplicates:
            raise ValueError(f"question {self.name!r} has duplicate answers: {duplicates}")


@dataclass(frozen=True)
class DecisionTree:
    """The questions of a Galaxy Zoo decision tree; their answers, concatenated, make the flat answer vector."""

    questions: tuple[Question, ...]

    def __post_init__(self) -> None:
        if not self.questions:
            raise ValueError("a decision tree needs at least one question")
        names = [q.name for q in self.questions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"decision tree has duplicate question names: {duplicates}")
        columns = self.answer_columns()
        clashes = sorted({c for c in columns if columns.count(c) > 1})
        if clashes:
            raise ValueError(f"decision tree has duplicate answer columns: {clashes}")

    @property
    def n_answers(self) -> int:
        """The total number of answer columns over all questions."""
        return sum(len(q.answers) for q in self.questions)

    def slices(self) -> list[tuple[int, int]]:
        """The (start, end) column range of each question in the flat answer vector, in question order."""
        ranges: list[tuple[int, int]] = []
        start = 0
        for q in self.questions:
            ranges.append((start, start + len(q.answers)))
            start += len(q.answers)
        return ranges

    def answer_columns(self) -> list[str]:
        """The flat answer vector's column names, "question_answer"."""
        return [f"{q.name}_{a}" for q in self.questions for a in q.answers]


GZ1_TREE = DecisionTree((Question("gz1_class", ("elliptical", "spiral", "edge_on", "merger", "dont_know")),))
"""Galaxy Zoo 1 asked a single question; its clockwise and anticlockwise spiral answers are merged into "spiral"."""

GZ_DECALS_SMOOTH_FEATURED_TREE = DecisionTree((
    Question("smooth_or_featured", ("smooth", "featured_or_disk", "artifact")),
    Question("disk_edge_on", ("yes", "no")),
    Question("has_spiral_arms", ("yes", "no")),
))
"""A small two-level excerpt of the GZ DECaLS tree. Only volunteers who answered "featured_or_disk" are asked
"disk_edge_on", and only those who then answered "no" are asked "has_spiral_arms", so the follow-up questions' vote
totals are often 0."""


def _check_2d(name: str, tensor: torch.Tensor, width: int | None = None) -> None:
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D [batch, answers], got shape {tuple(tensor.shape)}")
    if width is not None and tensor.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns (tree.n_answers), got shape {tuple(tensor.shape)}")


def dirichlet_multinomial_log_prob(counts: torch.Tensor, concentrations: torch.Tensor) -> torch.Tensor:
    """Per-row log pmf of the Dirichlet-multinomial for one question.

    counts [B, K] (non-negative, integer-valued floats), concentrations [B, K] (> 0); returns [B]:
    log Γ(A) − log Γ(N + A) + Σ_k [log Γ(n_k + α_k) − log Γ(α_k)] + log N! − Σ_k log n_k!, with A = Σα, N = Σn.
    The multinomial coefficient is included, so this equals scipy.stats.dirichlet_multinomial.logpmf. Rows with
    N = 0 give exactly 0 (and zero gradient).
    """
    _check_2d("counts", counts)
    _check_2d("concentrations", concentrations)
    if counts.shape != concentrations.shape:
        raise ValueError(f"counts {tuple(counts.shape)} and concentrations {tuple(concentrations.shape)} differ")
    counts = counts.to(concentrations.dtype)
    total_alpha = concentrations.sum(dim=1)
    total_n = counts.sum(dim=1)
    log_prob = (
        torch.lgamma(total_alpha)
        - torch.lgamma(total_n + total_alpha)
        + (torch.lgamma(counts + concentrations) - torch.lgamma(concentrations)).sum(dim=1)
        + torch.lgamma(total_n + 1)
        - torch.lgamma(counts + 1).sum(dim=1)
    )
    return torch.where(total_n > 0, log_prob, torch.zeros_like(log_prob))


def dirichlet_multinomial_loss(counts: torch.Tensor, concentrations: torch.Tensor, tree: DecisionTree,
                               reduction: str = "mean") -> torch.Tensor:
    """Negative Dirichlet-multinomial log-likelihood, summed over the tree's questions per galaxy.

    counts and concentrations are [B, tree.n_answers]; a question with zero total votes contributes exactly zero.
    reduction: "mean" (over galaxies), "sum", or "none" (returns [B]).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    _check_2d("counts", counts, tree.n_answers)
    _check_2d("concentrations", concentrations, tree.n_answers)
    if counts.shape[0] != concentrations.shape[0]:
        raise ValueError(f"counts {tuple(counts.shape)} and concentrations {tuple(concentrations.shape)} differ")
    per_galaxy = torch.zeros(concentrations.shape[0], dtype=concentrations.dtype, device=concentrations.device)
    for start, end in tree.slices():
        per_galaxy = per_galaxy - dirichlet_multinomial_log_prob(counts[:, start:end], concentrations[:, start:end])
    if reduction == "mean":
        return per_galaxy.mean()
    if reduction == "sum":
        return per_galaxy.sum()
    return per_galaxy


def concentrations_from_logits(logits: torch.Tensor, low: float = 1.0, high: float = 100.0) -> torch.Tensor:
    """The bounded concentration head of zoobot-style models: low + (high − low) · sigmoid(logits)."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    return low + (high - low) * torch.sigmoid(logits)


def vote_fractions(concentrations: torch.Tensor, tree: DecisionTree) -> torch.Tensor:
    """The expected vote fraction of each answer, α_k / A within its question; [B, tree.n_answers]."""
    _check_2d("concentrations", concentrations, tree.n_answers)
    parts = [concentrations[:, s:e] / concentrations[:, s:e].sum(dim=1, keepdim=True) for s, e in tree.slices()]
    return torch.cat(parts, dim=1)


def majority_class_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                                 class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on majority classes, for releases that carry no vote counts."""
    return F.cross_entropy(logits, targets, weight=class_weights)
