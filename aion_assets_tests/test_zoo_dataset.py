"""The Galaxy Zoo study's split: seeded, stratified, by image, identical across runs; nested training subsets."""

from __future__ import annotations

import polars as pl
import pytest

from aion_assets.zoo.dataset import CLASSES, build_dataset, split_counts, training_subset


def _tables(n_per_answer: dict[str, int], duplicate_every: int = 0):
    cutouts, labels = [], []
    index = 0
    for answer, n in n_per_answer.items():
        for _ in range(n):
            object_id = f"obj{index:05d}"
            # every duplicate_every-th object re-publishes the previous object's image under a new id
            sha = f"sha{index - 1:05d}" if duplicate_every and index % duplicate_every == 0 and index else f"sha{index:05d}"
            cutouts.append({"release": "gz1-sdss", "object_id": object_id, "sha256": sha, "shard": "0000",
                            "row": index})
            labels.append({"release": "gz1-sdss", "object_id": object_id, "name": "gz1_class", "value": answer})
            index += 1
    cutouts.append({"release": "other", "object_id": "x", "sha256": "shaX", "shard": "0000", "row": 0})
    return pl.DataFrame(cutouts), pl.DataFrame(labels)


ANSWERS = {"elliptical": 400, "spiral_clockwise": 40, "spiral_anticlockwise": 40, "edge_on": 90, "merger": 20,
           "dont_know": 10}


def test_the_split_is_identical_across_runs_and_row_orders() -> None:
    cutouts, labels = _tables(ANSWERS, duplicate_every=7)
    first = build_dataset(cutouts, labels, seed=0)
    again = build_dataset(cutouts.reverse(), labels.sample(fraction=1.0, shuffle=True, seed=3), seed=0)
    assert first.select("object_id", "split").equals(again.select("object_id", "split"))
    other_seed = build_dataset(cutouts, labels, seed=1)
    assert not first.select("object_id", "split").equals(other_seed.sort("split", "label", "object_id")
                                                         .select("object_id", "split"))


def test_splits_are_disjoint_by_image_and_stratified() -> None:
    cutouts, labels = _tables(ANSWERS, duplicate_every=5)
    dataset = build_dataset(cutouts, labels, seed=0)
    assert dataset.group_by("sha256").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).is_empty()
    assert dataset.filter(pl.col("release") != "gz1-sdss").is_empty()
    counts = split_counts(dataset)
    assert set(counts["label"]) == set(CLASSES)  # the spiral senses are one class
    for row in counts.iter_rows(named=True):
        total = row["train"] + row["validation"] + row["test"]
        assert abs(row["test"] / total - 0.2) < 0.12, row
        assert row["train"] > row["test"] >= 1


def test_unknown_answers_are_an_error_and_no_labels_is_an_error() -> None:
    cutouts, labels = _tables({"elliptical": 10, "lenticular": 3})
    with pytest.raises(ValueError, match="lenticular"):
        build_dataset(cutouts, labels)
    with pytest.raises(ValueError, match="no gz1-sdss object"):
        build_dataset(cutouts, labels.clear())


def test_training_subsets_are_nested_stratified_and_seeded() -> None:
    dataset = build_dataset(*_tables(ANSWERS), seed=0)
    train = dataset.filter(pl.col("split") == "train")
    subsets = {f: set(training_subset(dataset, f, seed=0)["object_id"]) for f in (1 / 16, 1 / 4, 1.0)}
    assert subsets[1 / 16] < subsets[1 / 4] < subsets[1.0] == set(train["object_id"])
    small = training_subset(dataset, 1 / 16, seed=0)
    assert set(small["label"]) == set(train["label"])  # every class kept, at least once
    assert set(training_subset(dataset, 1 / 16, seed=1)["object_id"]) != subsets[1 / 16]
    assert small.filter(pl.col("split") != "train").is_empty()


def _with_votes(cutouts: pl.DataFrame, labels: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Vote counts for every GZ1 answer, drawn around each object's majority class (some objects seen by nobody)."""
    import numpy as np

    from aion_assets.zoo.dataset import CLASS_OF_ANSWER
    from aion_assets.zoo.objectives import vote_columns

    rng = np.random.default_rng(seed)
    rows = []
    for row in labels.iter_rows(named=True):
        total = int(rng.integers(0, 40))
        probs = np.full(len(CLASSES), 0.1)
        probs[CLASSES.index(CLASS_OF_ANSWER[row["value"]])] = 1.0
        counts = rng.multinomial(total, probs / probs.sum())
        rows += [{"release": row["release"], "object_id": row["object_id"], "name": column, "value": str(count)}
                 for column, count in zip(vote_columns(), counts)]
    return pl.concat([labels, pl.DataFrame(rows)])


def test_a_release_with_vote_counts_trains_with_the_dirichlet_multinomial_loss() -> None:
    import torch

    from aion_assets.zoo.models import ZooCNN
    from aion_assets.zoo.objectives import objective_for, scores
    from aion_assets.zoo.training import TrainConfig, predict_logits, train_classifier

    cutouts, labels = _tables(ANSWERS)
    assert objective_for(build_dataset(cutouts, labels)).name == "cross_entropy"  # the sample releases
    dataset = build_dataset(cutouts, _with_votes(cutouts, labels))
    objective = objective_for(dataset)
    assert objective.name == "dirichlet_multinomial"
    train, validation = (dataset.filter(pl.col("split") == s) for s in ("train", "validation"))
    assert objective.targets(train).shape == (train.height, len(CLASSES))
    pixels = {name: torch.randint(0, 256, (rows.height, 16, 16, 3), dtype=torch.uint8)
              for name, rows in (("train", train), ("validation", validation))}
    result = train_classifier(ZooCNN(len(CLASSES), 2), pixels["train"], objective.targets(train),
                              pixels["validation"], objective.targets(validation),
                              TrainConfig(max_epochs=2, min_round_steps=1), loss_fn=objective.loss_fn)
    figures = scores(objective, predict_logits(result.model, pixels["validation"]), validation)
    assert figures["loss"] > 0 and 0 <= figures["error"] <= 1


def test_partial_or_broken_vote_counts_are_an_error() -> None:
    cutouts, labels = _tables({"elliptical": 20, "edge_on": 10})
    voted = _with_votes(cutouts, labels)
    with pytest.raises(ValueError, match="not for gz1_class_merger"):
        build_dataset(cutouts, voted.filter(pl.col("name") != "gz1_class_merger"))
    broken = voted.with_columns(pl.when(pl.col("name") == "gz1_class_spiral").then(pl.lit("-3"))
                                .otherwise(pl.col("value")).alias("value"))
    with pytest.raises(ValueError, match="non-negative"):
        build_dataset(cutouts, broken)
