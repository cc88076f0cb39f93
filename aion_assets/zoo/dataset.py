"""The Galaxy Zoo study's dataset: gz1-sdss majority classes with one seeded, stratified split for every experiment.

Pure polars. The split is made by image, not only by object: objects whose cutouts are byte-identical (the same
sha256) always share a split, so no test image is ever trained on under another id. Each image's place comes from
a seeded blake2b hash ranked within its class, so the split does not depend on row order, and the same seed gives
the same split on every run and every machine.
"""

from __future__ import annotations

import hashlib

import polars as pl

RELEASE = "gz1-sdss"
LABEL = "gz1_class"
# Galaxy Zoo 1 asked for a spiral's sense of rotation; the two senses are one morphology (and merging them makes
# flips and rotations label-preserving augmentations).
CLASS_OF_ANSWER = {"elliptical": "elliptical", "spiral_clockwise": "spiral", "spiral_anticlockwise": "spiral",
                   "edge_on": "edge_on", "merger": "merger", "dont_know": "dont_know"}
CLASSES = ("elliptical", "spiral", "edge_on", "merger", "dont_know")
SPLITS = ("train", "validation", "test")
DATASET_SCHEMA = {"release": pl.String, "object_id": pl.String, "sha256": pl.String, "shard": pl.String,
                  "row": pl.Int64, "answer": pl.String, "label": pl.String, "class_index": pl.Int64,
                  "split": pl.String}


def seeded_rank(key: str, seed: int) -> int:
    """A stable pseudo-random rank of a key: the order images take within their class."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big")


def labelled_objects(cutouts: pl.DataFrame, labels: pl.DataFrame, release: str = RELEASE,
                     label: str = LABEL) -> pl.DataFrame:
    """Ingested cutouts of ``release`` with their Galaxy Zoo answer mapped to a class; unknown answers are an
    error (a new answer must be given a class here, never silently dropped)."""
    answers = labels.filter((pl.col("release") == release) & (pl.col("name") == label)).select(
        "release", "object_id", pl.col("value").alias("answer"))
    unknown = sorted(set(answers["answer"].to_list()) - set(CLASS_OF_ANSWER))
    if unknown:
        raise ValueError(f"{release}: {label} answers with no class: {', '.join(unknown)}")
    return (
        cutouts.filter(pl.col("release") == release).select("release", "object_id", "sha256", "shard", "row")
        .join(answers, on=["release", "object_id"], how="inner")
        .with_columns(pl.col("answer").replace_strict(CLASS_OF_ANSWER).alias("label"))
        .with_columns(pl.col("label").replace_strict({c: i for i, c in enumerate(CLASSES)},
                                                     return_dtype=pl.Int64).alias("class_index"))
    )


def assign_splits(objects: pl.DataFrame, seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> pl.DataFrame:
    """``objects`` with a ``split`` column: stratified by class, by image (every object of one sha256 lands in
    the split of that image's first object id), seeded."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    images = (objects.sort("object_id").group_by("sha256", maintain_order=True)
              .agg(pl.col("label").first().alias("image_label")))
    images = images.with_columns(pl.col("sha256").map_elements(lambda s: seeded_rank(s, seed),
                                                               return_dtype=pl.UInt64).alias("_rank"))
    ranked = images.sort("image_label", "_rank").with_columns(
        (pl.int_range(pl.len()).over("image_label") / pl.len().over("image_label")).alias("_quantile"))
    train_end, validation_end = fractions[0], fractions[0] + fractions[1]
    ranked = ranked.with_columns(
        pl.when(pl.col("_quantile") < train_end).then(pl.lit("train"))
        .when(pl.col("_quantile") < validation_end).then(pl.lit("validation"))
        .otherwise(pl.lit("test")).alias("split"))
    return objects.join(ranked.select("sha256", "split"), on="sha256", how="left")


def build_dataset(cutouts: pl.DataFrame, labels: pl.DataFrame, seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> pl.DataFrame:
    """The study's table: one row per labelled gz1-sdss object, with its class and split."""
    from aion_assets.zoo.objectives import attach_votes

    objects = labelled_objects(cutouts, labels)
    if objects.is_empty():
        raise ValueError(f"no {RELEASE} object with a {LABEL} label is ingested")
    dataset = assign_splits(objects, seed, fractions).select(list(DATASET_SCHEMA)).cast(DATASET_SCHEMA)
    return attach_votes(dataset, labels.filter(pl.col("release") == RELEASE)).sort("split", "label", "object_id")


def training_subset(dataset: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """``fraction`` of the train split, stratified by class (at least one object per class), nested: for one
    seed the 1/16 subset lies inside the 1/8 subset, and so on, so a larger N only ever adds images."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a training fraction lies in (0, 1], got {fraction}")
    train = dataset.filter(pl.col("split") == "train").with_columns(
        pl.col("sha256").map_elements(lambda s: seeded_rank(s, 1_000 + seed), return_dtype=pl.UInt64).alias("_rank"))
    ranked = train.sort("label", "_rank", "object_id").with_columns(
        pl.int_range(pl.len()).over("label").alias("_position"), pl.len().over("label").alias("_count"))
    keep = (pl.col("_position") < (pl.col("_count") * fraction).ceil().clip(lower_bound=1))
    return ranked.filter(keep).drop("_rank", "_position", "_count")


def split_counts(dataset: pl.DataFrame) -> pl.DataFrame:
    """Objects per class and split: the table on the materialization."""
    return (dataset.group_by("label", "split").agg(pl.len().alias("objects"))
            .pivot(on="split", index="label", values="objects").fill_null(0)
            .select("label", *[s for s in SPLITS if s in dataset["split"].unique().to_list()]).sort("label"))
