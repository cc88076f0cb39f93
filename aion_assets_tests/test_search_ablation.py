"""The search ablation: choices and their parsing, image and text views, sentence splitting, the dihedral
transforms, and an end-to-end run on a small synthetic archive whose images and texts share a latent signal."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from aion_assets.encoders.image import dihedral_transform, embed_dihedral
from aion_assets.encoders.text import sentence_embeddings, split_sentences
from aion_assets.search.ablation import (
    LORO_POOL,
    SERVED_CHOICES,
    AblationInputs,
    AblationPlan,
    SearchChoices,
    ablation_table,
    image_similarity_rows,
    image_views,
    one_at_a_time,
    parse_variant,
    pools_without_described,
    release_offsets,
    run_ablation,
    summarise,
    text_views,
)
from aion_assets.search.targets import Target
from aion_assets.search.training import TrainConfig

torch.set_num_threads(1)


# --- dihedral transforms ------------------------------------------------------------------------------------------

def test_dihedral_transforms_by_hand_on_a_2x2_image() -> None:
    image = np.array([[1, 2], [3, 4]])[None, :, :, None]  # [B, H, W, C]
    as_grid = lambda t: dihedral_transform(image, t)[0, :, :, 0].tolist()  # noqa: E731
    assert as_grid(0) == [[1, 2], [3, 4]]
    assert as_grid(1) == [[2, 4], [1, 3]]  # a quarter turn (anticlockwise, as np.rot90)
    assert as_grid(2) == [[4, 3], [2, 1]]  # a half turn
    assert as_grid(4) == [[2, 1], [4, 3]]  # the mirror image, left to right
    assert as_grid(6) == [[3, 4], [1, 2]]  # a half turn then the mirror: upside down


def test_the_eight_dihedral_transforms_are_distinct_invertible_and_a_group() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)  # random: no symmetry of its own
    views = [dihedral_transform(image, t) for t in range(8)]
    assert np.array_equal(views[0], image)
    assert all(v.shape == image.shape and v.dtype == image.dtype and v.flags.c_contiguous for v in views)
    for a in range(8):
        for b in range(a + 1, 8):
            assert not np.array_equal(views[a], views[b]), (a, b)
    for t in range(8):
        # rotations undo each other; every mirror is its own inverse
        inverse = (4 - t) % 4 if t < 4 else t
        assert np.array_equal(dihedral_transform(views[t], inverse), image), t
        # closure: a transform of a transform is one of the eight
        for u in range(8):
            twice = dihedral_transform(views[t], u)
            assert any(np.array_equal(twice, v) for v in views), (t, u)
    for bad in (-1, 8):
        with pytest.raises(ValueError, match="0-7"):
            dihedral_transform(image, bad)


class PixelEncoder:
    """The plainest image encoder: the flattened pixels as the embedding."""

    name = "pixels"
    input_kind = "rgb"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)

    def forward(self, prepared: np.ndarray) -> np.ndarray:
        return prepared

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(self.preprocess(batch))


def test_embed_dihedral_embeds_each_transform_in_order() -> None:
    rng = np.random.default_rng(1)
    cutouts = rng.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    encoder = PixelEncoder(4 * 4 * 3)
    views = embed_dihedral(encoder, cutouts, batch_size=2)
    assert views.shape == (5, 8, 48) and views.dtype == np.float32
    for t in range(8):
        assert np.array_equal(views[:, t], dihedral_transform(cutouts, t).reshape(5, -1).astype(np.float32))
    assert embed_dihedral(encoder, cutouts[:0]).shape == (0, 8, 48)


# --- sentences ----------------------------------------------------------------------------------------------------

def test_split_sentences_at_a_stop_followed_by_a_capital() -> None:
    text = "  A face-on spiral galaxy. It has two arms!  Is it barred? yes, weakly. The bulge is 3.5 arcsec wide.  "
    assert split_sentences(text) == ["A face-on spiral galaxy.", "It has two arms!", "Is it barred? yes, weakly.",
                                     "The bulge is 3.5 arcsec wide."]
    # capped: the last keeps the rest, so no word is lost
    capped = split_sentences(text, max_sentences=2)
    assert capped == ["A face-on spiral galaxy.", "It has two arms! Is it barred? yes, weakly. The bulge is 3.5 "
                                                  "arcsec wide."]
    assert " ".join(capped).split() == text.split()
    assert split_sentences("One sentence, no stop") == ["One sentence, no stop"]
    assert split_sentences("   ") == []


def _fake_text_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic text 'embedding': length, word count and first letter's code point."""
    return np.array([[len(t), len(t.split()), ord(t[0])] for t in texts], dtype=np.float32)


def test_sentence_embeddings_pad_with_nan() -> None:
    descriptions = ["Red. Round. Smooth.", "A single sentence.", "", "Blue. Barred."]
    out = sentence_embeddings(descriptions, _fake_text_encoder)
    assert out.shape == (4, 3, 3) and out.dtype == np.float32
    assert np.array_equal(out[0], _fake_text_encoder(["Red.", "Round.", "Smooth."]))
    assert np.array_equal(out[1, 0], _fake_text_encoder(["A single sentence."])[0])
    assert np.isnan(out[1, 1:]).all() and np.isnan(out[2]).all() and np.isnan(out[3, 2]).all()
    assert np.array_equal(out[3, :2], _fake_text_encoder(["Blue.", "Barred."]))
    capped = sentence_embeddings(descriptions, _fake_text_encoder, max_sentences=2)
    assert capped.shape == (4, 2, 3)
    assert np.array_equal(capped[0, 1], _fake_text_encoder(["Round. Smooth."])[0])


# --- choices ------------------------------------------------------------------------------------------------------

def test_parse_variant_changes_only_the_named_fields() -> None:
    base = SearchChoices()
    text_mean = parse_variant("text=mean", base)
    assert text_mean == replace(base, text="mean")
    assert text_mean.changes_from(base) == "text=mean"
    two = parse_variant("ensemble=on, hubness=csls", base)
    assert two == replace(base, ensemble=True, hubness="csls")
    assert two.changes_from(base) == "ensemble=on, hubness=csls"
    assert parse_variant("demote_artefacts=off", replace(base, demote_artefacts=True)).demote_artefacts is False
    assert parse_variant(" learn_temperature = off ", base).learn_temperature is False
    assert parse_variant("") == SERVED_CHOICES  # the served choices are the default baseline
    for bad in ("colour=red", "ensemble=yes", "text=", "hubness", "text=bogus", "orientation=sideways"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def test_search_choices_validate_and_name_their_changes() -> None:
    for field, value in (("orientation", "sideways"), ("text", "poems"), ("hubness", "shrink")):
        with pytest.raises(ValueError, match=field):
            SearchChoices(**{field: value})
    base = SearchChoices()
    assert base.changes_from(SearchChoices()) == "baseline"
    assert SearchChoices(orientation="train", release_centring=True).changes_from(base) == \
        "orientation=train, release_centring=on"
    assert base.changes_from(replace(base, demote_artefacts=True)) == "demote_artefacts=off"
    # ranking-time options share the trained heads; training options do not
    assert replace(base, ensemble=True, hubness="csls").training_key() == base.training_key()
    assert replace(base, orientation="mean").training_key() != base.training_key()
    variants = one_at_a_time(base, {"hubness": ["none", "csls"], "ensemble": [True]})
    assert [v.changes_from(base) for v in variants] == ["baseline", "hubness=csls", "ensemble=on"]


# --- image and text views -----------------------------------------------------------------------------------------

def _small_inputs(rng: np.random.Generator, release_shift: float = 4.0) -> AblationInputs:
    releases = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 5)
    n, d = len(releases), 5
    shift = {"a": 0.0, "b": release_shift, "c": -release_shift}
    dihedral = rng.normal(size=(n, 8, d)).astype(np.float32)
    dihedral += np.array([shift[r] for r in releases], dtype=np.float32)[:, None, None]
    objects = pl.DataFrame({"release": releases, "object_id": [f"o{i}" for i in range(n)],
                            "sha256": [f"h{i}" for i in range(n)]})
    described = objects[[0, 5]].with_columns(object_row=pl.Series([0, 5]), summary=pl.Series(["x", "y"]))
    texts = {"description": rng.normal(size=(2, 3)).astype(np.float32),
             "summary": rng.normal(size=(2, 3)).astype(np.float32)}
    return AblationInputs(objects=objects, images={"enc": dihedral[:, 0].copy()}, described=described, texts=texts,
                          labels=pl.DataFrame(schema={"release": pl.String, "object_id": pl.String,
                                                      "name": pl.String, "value": pl.String}),
                          encode_queries=_fake_text_encoder, dihedral={"enc": dihedral})


def test_image_views_by_orientation() -> None:
    inputs = _small_inputs(np.random.default_rng(2))
    views = inputs.dihedral["enc"]
    indexed, trained = image_views(inputs, SearchChoices(encoder="enc"))
    assert np.array_equal(indexed, inputs.images["enc"]) and trained.shape == (12, 1, 5)
    indexed, trained = image_views(inputs, SearchChoices(encoder="enc", orientation="mean"))
    assert np.allclose(indexed, views.mean(axis=1)) and np.array_equal(trained[:, 0], indexed)
    indexed, trained = image_views(inputs, SearchChoices(encoder="enc", orientation="train"))
    assert np.array_equal(indexed, views[:, 0]) and np.array_equal(trained, views)
    assert trained.shape == (12, 8, 5)
    indexed, trained = image_views(inputs, SearchChoices(encoder="enc", orientation="train+mean"))
    assert np.allclose(indexed, views.mean(axis=1)) and np.array_equal(trained, views)
    without = replace(inputs, dihedral={})
    with pytest.raises(ValueError, match="dihedral"):
        image_views(without, SearchChoices(encoder="enc", orientation="train"))
    with pytest.raises(ValueError, match="rows"):
        replace(inputs, images={"enc": inputs.images["enc"][:-1]})


def test_release_centring_gives_every_release_the_overall_mean() -> None:
    inputs = _small_inputs(np.random.default_rng(3))
    releases = inputs.objects["release"].to_numpy()
    for orientation in ("none", "train", "mean"):
        plain, _ = image_views(inputs, SearchChoices(encoder="enc", orientation=orientation))
        indexed, trained = image_views(inputs, SearchChoices(encoder="enc", orientation=orientation,
                                                             release_centring=True))
        overall = plain.mean(axis=0)
        assert np.allclose(indexed.mean(axis=0), overall, atol=1e-5)
        for release in ("a", "b", "c"):
            assert np.allclose(indexed[releases == release].mean(axis=0), overall, atol=1e-5), release
        # the views training draws from move by the same offset as the indexed vector
        assert np.allclose(trained - indexed[:, None, :], image_views(inputs, SearchChoices(
            encoder="enc", orientation=orientation))[1] - plain[:, None, :], atol=1e-5)
    # by hand: releases x, x, y with values 1, 3, 8: overall 4, release means 2 and 8 -> offsets -2, -2, 4
    offsets = release_offsets(np.array([[1.0], [3.0], [8.0]]), np.array(["x", "x", "y"]))
    assert offsets[:, 0].tolist() == [-2.0, -2.0, 4.0]


def test_text_views_by_choice() -> None:
    inputs = _small_inputs(np.random.default_rng(4))
    description, summary = inputs.texts["description"], inputs.texts["summary"]
    views = text_views(inputs, SearchChoices(text="views"))
    assert views.shape == (2, 2, 3) and np.array_equal(views[:, 1], summary)
    assert np.allclose(text_views(inputs, SearchChoices(text="mean"))[:, 0], (description + summary) / 2)
    assert np.array_equal(text_views(inputs, SearchChoices(text="description"))[:, 0], description)
    with pytest.raises(ValueError, match="sentences"):
        text_views(inputs, SearchChoices(text="chunks"))
    sentences = np.full((2, 3, 3), np.nan, dtype=np.float32)
    sentences[:, 0] = description
    chunks = text_views(replace(inputs, texts={**inputs.texts, "sentences": sentences}), SearchChoices(text="chunks"))
    assert chunks.shape == (2, 4, 3) and np.array_equal(chunks[:, 3], summary)


# --- an end-to-end ablation on a toy archive ----------------------------------------------------------------------

RELEASES = ("rel-a", "rel-b", "rel-c")  # rel-c publishes no label: in no pool
PER_RELEASE, DESCRIBED_PER_RELEASE = 200, 80
LATENT, IMAGE_DIM, TEXT_DIM = 8, 24, 16
TOY_TARGETS = (Target("blobs", "a blob galaxy", "rel-a", "kind", ("blob",)),
               Target("rings", "a ring galaxy", "rel-b", "shape", ("ring", "double_ring")))
PLAN = AblationPlan(seeds=(0, 1), train=TrainConfig(epochs=10, hidden_dim=32, out_dim=16, batch_size=64, lr=3e-3,
                                                    dropout=0.0, device="cpu", torch_threads=1), loro=True)


def toy_inputs(seed: int = 0) -> AblationInputs:
    """A latent z explains both sides: image = z A + noise, each text = z B + noise. Relevant objects of a
    target sit 3 units along their own latent axis; the query is the text of that offset alone (z = 3 e_k)."""
    rng = np.random.default_rng(seed)
    to_image = rng.normal(size=(LATENT, IMAGE_DIM)) / np.sqrt(LATENT)
    to_text = rng.normal(size=(LATENT, TEXT_DIM)) / np.sqrt(LATENT)
    n = PER_RELEASE * len(RELEASES)
    release = np.repeat(RELEASES, PER_RELEASE)
    object_id = [f"obj{i % PER_RELEASE:03d}" for i in range(n)]
    sha256 = [hashlib.sha256(f"{r}/{o}".encode()).hexdigest() for r, o in zip(release, object_id, strict=True)]
    member = rng.random(n) < 0.15
    kind = np.where(member & (release == "rel-a"), 0, np.where(member & (release == "rel-b"), 1, -1))
    z = rng.normal(size=(n, LATENT))
    z[kind == 0, 0] += 3.0
    z[kind == 1, 1] += 3.0
    images = (z @ to_image + 0.2 * rng.normal(size=(n, IMAGE_DIM))).astype(np.float32)
    described_rows = np.sort(np.concatenate([
        np.flatnonzero(release == r)[rng.permutation(PER_RELEASE)[:DESCRIBED_PER_RELEASE]] for r in RELEASES]))
    # an undescribed rel-b cutout re-publishes the image of a described rel-a one: same sha256, another id
    copy_row = int(np.setdiff1d(np.flatnonzero(release == "rel-b"), described_rows)[0])
    sha256[copy_row] = sha256[described_rows[0]]
    objects = pl.DataFrame({"release": release, "object_id": object_id, "sha256": sha256})
    described = objects[described_rows].with_columns(
        object_row=pl.Series(described_rows), summary=pl.lit("A galaxy in a sparse field."))
    z_described = z[described_rows]
    texts = {view: (z_described @ to_text + 0.3 * rng.normal(size=(len(described_rows), TEXT_DIM))).astype(np.float32)
             for view in ("description", "summary")}
    rows_a, rows_b = np.flatnonzero(release == "rel-a"), np.flatnonzero(release == "rel-b")
    labels = pl.concat([
        pl.DataFrame({"release": "rel-a", "object_id": [object_id[i] for i in rows_a], "name": "kind",
                      "value": ["blob" if kind[i] == 0 else "plain" for i in rows_a]}),
        pl.DataFrame({"release": "rel-b", "object_id": [object_id[i] for i in rows_b], "name": "shape",
                      "value": ["ring" if kind[i] == 1 else "none" for i in rows_b]}),
    ])
    queries = {"a blob galaxy": 3.0 * to_text[0], "a ring galaxy": 3.0 * to_text[1]}

    def encode_queries(typed: list[str]) -> np.ndarray:
        return np.stack([queries[q] for q in typed]).astype(np.float32)

    return AblationInputs(objects=objects, images={"x": images}, described=described, texts=texts, labels=labels,
                          encode_queries=encode_queries, targets=TOY_TARGETS)


BASE = SearchChoices(encoder="x")
VARIANTS = (BASE, replace(BASE, ensemble=True), replace(BASE, hubness="csls"))


@pytest.fixture(scope="module")
def toy() -> AblationInputs:
    return toy_inputs()


@pytest.fixture(scope="module")
def ablation(toy: AblationInputs) -> pl.DataFrame:
    messages: list[str] = []
    rows = run_ablation(toy, VARIANTS, PLAN, progress=messages.append)
    # heads are trained once per training key, seed and held-out release: 2 seeds x (all + 2 held out)
    assert len(messages) == 6 and all(m.startswith("training baseline seed") for m in messages)
    return rows


def test_pools_hold_no_described_object(toy: AblationInputs) -> None:
    candidates = pools_without_described(toy)
    described = toy.described
    keys = set(zip(described["release"], described["object_id"], strict=True))
    assert not keys & set(zip(candidates["release"], candidates["object_id"], strict=True))
    assert not set(described["sha256"]) & set(candidates["sha256"])
    # every cutout but the 240 described and the one re-published copy of a described image
    assert candidates.height == len(RELEASES) * (PER_RELEASE - DESCRIBED_PER_RELEASE) - 1
    rows = candidates["object_row"].to_numpy()
    assert (toy.objects[rows].select("release", "object_id", "sha256").rows()
            == candidates.select("release", "object_id", "sha256").rows())
    # an excluded object (what a compared encoder trained on) leaves the pools too
    excluded = candidates.select("release", "object_id", "sha256")[:3]
    fewer = pools_without_described(replace(toy, excluded=excluded))
    assert fewer.height == candidates.height - 3
    assert not set(excluded["object_id"].to_list()) & set(fewer.filter(pl.col("release") == "rel-a")["object_id"])


def test_ablation_rows_cover_every_variant_pool_and_replicate(ablation: pl.DataFrame, toy: AblationInputs) -> None:
    assert set(ablation.columns) == {"variant", "replicate", "method", "target", "pool", "metric", "value",
                                     "n_relevant", "pool_size"}
    assert ablation["variant"].unique().sort().to_list() == ["baseline", "ensemble=on", "hubness=csls"]
    for variant in ("baseline", "ensemble=on", "hubness=csls"):
        text = ablation.filter((pl.col("variant") == variant) & (pl.col("method") == "text_search"))
        for target in ("blobs", "rings"):
            pools = set(text.filter(pl.col("target") == target)["pool"])
            assert pools == {"release", "survey", LORO_POOL}, (variant, target)
        assert sorted(set(text["replicate"])) == [0, 1]
        assert set(text.filter(pl.col("target") == "-")["metric"]) >= {"val_mrr", "description_n10_skewness",
                                                                        "probe_n10_max"}
        image = ablation.filter((pl.col("variant") == variant) & (pl.col("method") == "image_similarity"))
        assert set(image["replicate"]) == {-1}
        assert set(image["pool"]) == {"release", "survey", LORO_POOL}
    assert set(ablation["replicate"]) == {-1, 0, 1}

    # pool sizes and relevant counts are those of the undescribed cutouts
    candidates = pools_without_described(toy)
    relevant_a = toy.labels.filter(pl.col("value") == "blob").join(
        candidates, on=["release", "object_id"], how="semi").height
    blobs = ablation.filter((pl.col("target") == "blobs") & (pl.col("pool") == "release"))
    assert set(blobs["pool_size"]) == {candidates.filter(pl.col("release") == "rel-a").height}
    assert set(blobs["n_relevant"]) == {relevant_a}
    survey = ablation.filter((pl.col("target") == "blobs") & (pl.col("pool") == "survey"))
    assert set(survey["pool_size"]) == {candidates.filter(pl.col("release") != "rel-c").height}


def test_text_search_beats_random_on_the_toy(ablation: pl.DataFrame) -> None:
    summary = summarise(ablation)
    text = summary.filter((pl.col("variant") == "baseline") & (pl.col("method") == "text_search")
                          & (pl.col("metric") == "ndcg@10"))
    for pool in ("release", LORO_POOL):
        for row in text.filter(pl.col("pool") == pool).iter_rows(named=True):
            # with binary relevance a random order's expected nDCG@10 is the base rate
            base_rate = row["n_relevant"] / row["pool_size"]
            assert base_rate < 0.25
            assert row["mean"] > base_rate + 0.2, row
    val_mrr = summary.filter((pl.col("variant") == "baseline") & (pl.col("metric") == "val_mrr"))["mean"][0]
    assert val_mrr > 0.5  # 36 validation pairs: a random ranking's MRR is about 0.12


def test_a_two_seed_ensemble_is_the_single_seeds(ablation: pl.DataFrame) -> None:
    # with seeds (0, 1) the leave-one-seed-out ensembles are (1,) and (0,): the baseline's heads, in swapped order
    def text_values(variant: str, replicate: int) -> list[tuple]:
        return (ablation.filter((pl.col("variant") == variant) & (pl.col("replicate") == replicate)
                                & (pl.col("method") == "text_search"))
                .sort("target", "pool", "metric").select("target", "pool", "metric", "value").rows())

    for replicate in (0, 1):
        ensemble = text_values("ensemble=on", replicate)
        single = text_values("baseline", 1 - replicate)
        assert [r[:3] for r in ensemble] == [r[:3] for r in single]
        assert np.allclose([r[3] for r in ensemble], [r[3] for r in single], rtol=1e-9, atol=1e-12)
    assert text_values("baseline", 0) != text_values("baseline", 1)  # the two seeds differ


def test_summarise_and_table(ablation: pl.DataFrame) -> None:
    summary = summarise(ablation)
    text = summary.filter(pl.col("method") == "text_search")
    assert set(text["replicates"]) == {2}
    image = summary.filter(pl.col("method") == "image_similarity")
    assert set(image["replicates"]) == {1} and set(image["std"]) == {0.0}
    # by hand: equal replicates spread 0; values 1 and 3 have mean 2 and sample std sqrt 2
    hand = pl.DataFrame({"variant": ["v"] * 4, "target": ["t", "t", "u", "u"], "pool": ["release"] * 4,
                         "method": ["text_search"] * 4, "metric": ["ndcg@10"] * 4, "value": [0.4, 0.4, 1.0, 3.0],
                         "n_relevant": [3] * 4, "pool_size": [10] * 4, "replicate": [0, 1, 0, 1]})
    figures = {r["target"]: r for r in summarise(hand).iter_rows(named=True)}
    assert figures["t"]["std"] == 0.0 and figures["t"]["mean"] == pytest.approx(0.4)
    assert figures["u"]["mean"] == pytest.approx(2.0) and figures["u"]["std"] == pytest.approx(2 ** 0.5)
    assert figures["t"]["replicates"] == figures["u"]["replicates"] == 2

    table = ablation_table(summary)
    text_rows = table.filter(~pl.col("variant").str.starts_with("image similarity"))
    assert text_rows["variant"].to_list() == ["baseline", "ensemble=on", "hubness=csls"]
    # all three index the same vectors: one image-similarity row
    assert table.height == 4 and table["variant"][3] == "image similarity (baseline)"
    assert set(table.columns) == {"variant"} | {f"{t}/{p}" for t in ("blobs", "rings")
                                                for p in ("release", "survey", LORO_POOL)}
    baseline_cell = text_rows.filter(pl.col("variant") == "baseline")["blobs/release"][0]
    mean = summary.filter((pl.col("variant") == "baseline") & (pl.col("target") == "blobs")
                          & (pl.col("pool") == "release") & (pl.col("metric") == "ndcg@10")
                          & (pl.col("method") == "text_search"))["mean"][0]
    assert baseline_cell.startswith(f"{round(mean, 3)} ± ")


def test_image_similarity_rows_follow_the_variants_indexed_vectors(toy: AblationInputs) -> None:
    # release centring changes the indexed vectors, so its image-similarity figures are its own
    shifted = toy.images["x"] + np.where(toy.objects["release"].to_numpy() == "rel-b", 2.0, 0.0)[:, None]
    inputs = replace(toy, images={"x": shifted.astype(np.float32)})
    centred = replace(BASE, release_centring=True)
    plan = replace(PLAN, seeds=(0,), loro=False, train=replace(PLAN.train, epochs=1))
    rows = run_ablation(inputs, [BASE, centred], plan)
    candidates = pools_without_described(inputs)
    for variant, name in ((BASE, "baseline"), (centred, "release_centring=on")):
        expected = image_similarity_rows(inputs, image_views(inputs, variant)[0], candidates)
        got = (rows.filter((pl.col("variant") == name) & (pl.col("method") == "image_similarity"))
               .select("target", "pool", "metric", "value").rows())
        assert sorted(got) == sorted((r["target"], r["pool"], r["metric"], r["value"]) for r in expected), name
    image = rows.filter(pl.col("method") == "image_similarity")
    assert (image.filter(pl.col("variant") == "baseline")["value"].to_list()
            != image.filter(pl.col("variant") == "release_centring=on")["value"].to_list())
