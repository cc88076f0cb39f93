"""What the study trains against: volunteer vote counts when a release carries them, majority classes otherwise.

Galaxy Zoo releases that publish raw votes (one count per answer of the decision tree, as labels named
``<question>_<answer>``, e.g. ``gz1_class_spiral``) are trained with the Dirichlet-multinomial likelihood of
those counts, which weighs a galaxy by how many volunteers saw it and lets a question nobody was asked contribute
nothing. The sample releases publish only the majority class, so they are trained with cross-entropy. Either way
the model's outputs are one logit per answer (the class order of ``dataset.CLASSES``), and the error rate is the
argmax against the majority class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import torch
import torch.nn.functional as F

from aion_assets.zoo.dataset import CLASSES
from aion_assets.zoo.losses import GZ1_TREE, DecisionTree, concentrations_from_logits, dirichlet_multinomial_loss


@dataclass(frozen=True)
class Objective:
    name: str  # "dirichlet_multinomial" or "cross_entropy"
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    column: str  # the dataset column the targets come from

    def targets(self, rows: pl.DataFrame) -> torch.Tensor:
        if self.column == "votes":
            return torch.tensor(rows["votes"].to_list(), dtype=torch.float32)
        return torch.tensor(rows["class_index"].to_numpy())


def _dirichlet_multinomial(tree: DecisionTree) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return dirichlet_multinomial_loss(counts, concentrations_from_logits(logits), tree)

    return loss


def vote_columns(tree: DecisionTree = GZ1_TREE) -> list[str]:
    """The label names that hold a tree's vote counts, in answer order."""
    return tree.answer_columns()


def attach_votes(dataset: pl.DataFrame, labels: pl.DataFrame, tree: DecisionTree = GZ1_TREE) -> pl.DataFrame:
    """``dataset`` with a ``votes`` list column (one count per answer) when the release publishes every answer's
    count for every object; otherwise unchanged. A count that is not a non-negative number is an error."""
    columns = vote_columns(tree)
    counts = labels.filter(pl.col("name").is_in(columns))
    if counts.is_empty():
        return dataset
    wide = counts.pivot(on="name", index=["release", "object_id"], values="value", aggregate_function="first")
    missing = [c for c in columns if c not in wide.columns]
    if missing:
        raise ValueError(f"vote counts are published for some answers but not for {', '.join(missing)}")
    values = wide.select("release", "object_id", *[pl.col(c).cast(pl.Float64, strict=False) for c in columns])
    bad = values.filter(pl.any_horizontal(pl.col(c).is_null() | (pl.col(c) < 0) for c in columns))
    if bad.height:
        raise ValueError(f"{bad.height} objects have a vote count that is not a non-negative number")
    joined = dataset.join(values.select("release", "object_id", pl.concat_list(columns).alias("votes")),
                          on=["release", "object_id"], how="left")
    if joined["votes"].null_count():
        raise ValueError(f"{joined['votes'].null_count()} labelled objects have no vote counts: counts must cover "
                         "the whole release or none of it")
    return joined


def objective_for(dataset: pl.DataFrame, tree: DecisionTree = GZ1_TREE) -> Objective:
    if "votes" in dataset.columns:
        if tree.n_answers != len(CLASSES):
            raise ValueError(f"the tree has {tree.n_answers} answers, the classes are {len(CLASSES)}")
        return Objective("dirichlet_multinomial", _dirichlet_multinomial(tree), "votes")
    return Objective("cross_entropy", F.cross_entropy, "class_index")


def scores(objective: Objective, logits: torch.Tensor, rows: pl.DataFrame) -> dict[str, float]:
    """Test loss under the objective, and the error rate against the majority class."""
    from aion_assets.zoo.training import error_rate

    return {"loss": float(objective.loss_fn(logits, objective.targets(rows))),
            "error": error_rate(logits, torch.tensor(rows["class_index"].to_numpy()))}
