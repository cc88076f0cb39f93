"""AP@k, lift@k and their random expectations by hand; pools that exclude the training set by id and by image."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest

from aion_assets.search.evaluation import (
    evaluate_all,
    exclude_training_set,
    target_pool,
    training_overlap,
)
from aion_assets.search.metrics import (
    average_precision_at_k,
    evaluate_ranking,
    expected_average_precision,
    lift_at_k,
    random_expectation,
)
from aion_assets.search.targets import Target


def test_average_precision_by_hand() -> None:
    # relevant at ranks 1, 3 and 6 of a pool with 4 relevant objects: (1/1 + 2/3 + 3/6) / 4
    flags = [1, 0, 1, 0, 0, 1, 0]
    assert average_precision_at_k(flags, n_relevant=4, k=100) == pytest.approx((1 + 2 / 3 + 3 / 6) / 4)
    # cut at k=3: only ranks 1 and 3 count, normalised by min(R, k) = 3
    assert average_precision_at_k(flags, n_relevant=4, k=3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k([1, 1, 0], n_relevant=2, k=100) == 1.0
    assert average_precision_at_k([0, 0], n_relevant=0, k=100) == 0.0


def test_lift_by_hand() -> None:
    # 3 relevant in the top 10 of a pool of 1,000 holding 20: precision 0.3 over a base rate 0.02 = 15
    flags = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert lift_at_k(flags, n_relevant=20, pool_size=1000, k=10) == pytest.approx(15.0)
    assert lift_at_k([1, 1], n_relevant=2, pool_size=2, k=10) == pytest.approx(1.0)  # the whole pool is relevant
    assert lift_at_k([0, 0], n_relevant=0, pool_size=2, k=10) == 0.0


def test_expected_average_precision_equals_the_mean_over_every_ordering() -> None:
    for n, r, k in ((6, 2, 3), (7, 3, 7), (5, 1, 2)):
        pool = [1] * r + [0] * (n - r)
        orderings = set(itertools.permutations(pool))
        mean = np.mean([average_precision_at_k(list(o), r, k) for o in orderings])
        assert expected_average_precision(r, n, k) == pytest.approx(mean, rel=1e-12)


def test_random_expectation_has_lift_one_and_exact_ap() -> None:
    relevance = np.array([0] * 90 + [1] * 10)
    expected = random_expectation(relevance)
    assert expected["lift@10"] == 1.0
    assert expected["ap@100"] == pytest.approx(expected_average_precision(10, 100, 100))
    # a perfect ranking scores AP 1 and the largest possible lift, N / R
    perfect = evaluate_ranking(relevance.astype(float), relevance)
    assert perfect["ap@100"] == 1.0 and perfect["lift@10"] == pytest.approx(10.0)


def _cutouts(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"release": r, "object_id": o, "sha256": s, "shard": "0000", "row": i} for i, (r, o, s) in enumerate(rows)])


RINGS = Target("rings", "a ring galaxy", "rings-rel", "ring", ("1",))


def _labels() -> pl.DataFrame:
    return pl.DataFrame({
        "release": ["rings-rel"] * 4 + ["other-rel"],
        "object_id": ["a", "b", "c", "d", "x"],
        "name": ["ring"] * 4 + ["kind"],
        "value": ["1", "0", "1", "0", "spiral"],
    })


def test_training_set_is_excluded_by_id_and_by_image() -> None:
    cutouts = _cutouts([("rings-rel", "a", "h-a"), ("rings-rel", "b", "h-b"), ("rings-rel", "c", "h-c"),
                        ("rings-rel", "copy-of-a", "h-a"), ("other-rel", "a", "h-other")])
    training = pl.DataFrame({"release": ["rings-rel"], "object_id": ["a"], "sha256": ["h-a"], "split": ["train"]})
    kept = exclude_training_set(cutouts, training)
    # the same id in another release is another object; a byte-identical copy under a new id is the same image
    assert sorted(kept.select("release", "object_id").iter_rows()) == [
        ("other-rel", "a"), ("rings-rel", "b"), ("rings-rel", "c")]
    assert training_overlap(cutouts.with_columns(pl.lit("t").alias("target")), training).height == 2
    assert training_overlap(kept, training).is_empty()


def test_release_and_survey_pools() -> None:
    cutouts = _cutouts([("rings-rel", "a", "1"), ("rings-rel", "b", "2"), ("rings-rel", "c", "3"),
                        ("rings-rel", "d", "4"), ("other-rel", "x", "5"), ("other-rel", "c", "6"),
                        ("unlabelled", "u", "7")])
    labels = _labels()
    release = target_pool(RINGS, "release", cutouts, labels)
    survey = target_pool(RINGS, "survey", cutouts, labels)
    assert release["object_id"].to_list() == ["a", "b", "c", "d"] and release["relevance"].sum() == 2
    # every labelled release, never an unlabelled one; the other release's "c" is not the rings release's "c"
    assert set(survey["release"]) == {"rings-rel", "other-rel"}
    assert survey.height == 6 and survey["relevance"].sum() == 2
    with pytest.raises(ValueError, match="pool"):
        target_pool(RINGS, "everything", cutouts, labels)


def test_evaluate_all_ranks_both_pools_and_records_what_it_ranked() -> None:
    cutouts = _cutouts([("rings-rel", "a", "1"), ("rings-rel", "b", "2"), ("rings-rel", "c", "3"),
                        ("rings-rel", "d", "4"), ("other-rel", "x", "5"), ("rings-rel", "dup", "1")])
    training = pl.DataFrame({"release": ["rings-rel"], "object_id": ["a"], "sha256": ["1"], "split": ["val"]})
    query = np.array([1.0, 0.0], dtype=np.float32)

    def vectors_for(pool: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        # relevant objects point along the query
        aligned = np.array([[1.0, 0.0] if r else [0.0, 1.0] for r in pool["relevance"]], dtype=np.float32)
        return aligned, aligned

    result = evaluate_all(cutouts, _labels(), training, vectors_for, lambda queries: np.stack([query] * len(queries)),
                          targets=(RINGS,), gallery_k=2)
    assert set(result.pools["pool"]) == {"release", "survey"}
    assert not {"a", "dup"} & set(result.pools["object_id"])
    text = result.figures.filter(pl.col("method") == "text_search")
    assert dict(text.filter(pl.col("pool") == "release").select("metric", "value").iter_rows())["ap@100"] == 1.0
    survey_lift = text.filter((pl.col("pool") == "survey") & (pl.col("metric") == "lift@10"))["value"][0]
    # 4 pooled (b, c, d, x), one relevant: a top 10 that holds the whole pool can do no better than random
    assert survey_lift == pytest.approx(1.0)
    top = result.top_hits.filter(pl.col("pool") == "survey")
    assert top["rank"].to_list() == [1, 2] and top["object_id"][0] == "c" and top["relevance"][0] == 1
    assert math.isclose(top["score"][0], 1.0)


def test_encoder_comparison_puts_encoders_side_by_side_on_identical_pools() -> None:
    from datetime import datetime, timedelta

    from aion_assets.search.evaluation import encoder_comparison

    t0 = datetime(2026, 1, 1)
    rows = []
    for encoder, excluded, value, minutes in (("efficientnet-lite0-fp32", "heads", 0.5, 0),
                                              ("efficientnet-lite0-fp32", "heads,zoo-lite0-v1", 0.6, 1),
                                              ("efficientnet-lite0-fp32", "heads,zoo-lite0-v1", 0.7, 2),
                                              ("zoo-lite0-v1-fp32", "heads,zoo-lite0-v1", 0.8, 3)):
        for method in ("text_search", "image_similarity", "random"):
            rows.append({"target": "mergers", "pool": "release", "method": method, "metric": "ndcg@10",
                         "value": value if method == "text_search" else value / 2, "image_encoder": encoder,
                         "excluded_by": excluded, "created_at": t0 + timedelta(minutes=minutes)})
    table = encoder_comparison(pl.DataFrame(rows))
    same_pools = table.filter(pl.col("excluded_by") == "heads,zoo-lite0-v1").row(0, named=True)
    assert same_pools["efficientnet-lite0-fp32 text_search"] == 0.7  # the latest of that encoder on those pools
    assert same_pools["zoo-lite0-v1-fp32 text_search"] == 0.8
    assert same_pools["zoo-lite0-v1-fp32 image_similarity"] == 0.4
    assert table.height == 2 and not any("random" in c for c in table.columns)
    assert encoder_comparison(pl.DataFrame({"target": ["x"]})).is_empty()  # rows from before encoders were named
