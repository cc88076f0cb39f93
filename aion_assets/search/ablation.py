"""Every modelling choice of the search, measured on and off over seeds, on every pool. Pure: no dagster.

One :class:`SearchChoices` is one way to build the search (image encoder, orientation handling, text views,
temperature, seed ensembling, hubness correction, artefact demotion). :func:`run_ablation` trains the heads for
each choice and seed and evaluates them on:
- `release` and `survey` (as ``retrieval_eval``): heads trained on every description;
- `leave_one_release_out`: for each labelled release, heads trained WITHOUT that release's descriptions, its
  targets evaluated on it: whether a new telescope's archive is searchable without describing any of it.
Every pool excludes every described object (by id and image sha256), so all choices rank identical pools and a
leave-one-release-out figure is comparable with the same release's `release` figure.

A seed ensemble averages the cosine scores of several seeds' heads; its replicates are the leave-one-seed-out
subsets of the seeds trained, so it needs no extra training (its spread is therefore a lower bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import polars as pl

from aion_assets.search.artefacts import (
    DEMOTION_THRESHOLD,
    artefact_labels,
    demote_artefacts,
    fit_artefact_model,
    query_asks_for_artefacts,
)
from aion_assets.search.evaluation import HEADLINE_METRICS, K_AP, K_LIFT, K_NDCG, K_RECALL, target_pool
from aion_assets.search.hubness import centre, csls_penalty, csls_scores, hubness_summary
from aion_assets.search.metrics import evaluate_ranking, image_similarity_baseline
from aion_assets.search.targets import TARGETS, Target
from aion_assets.search.training import (
    TEXT_POSITIVES,
    TrainConfig,
    clone_config,
    embed_images,
    embed_texts,
    text_positives,
    train_alignment,
)
from aion_assets.search.vectors import l2_normalise

LORO_POOL = "leave_one_release_out"
ORIENTATIONS = ("none", "train", "mean", "train+mean")
HUBNESS = ("none", "centre", "csls")
KS = {"k_ndcg": K_NDCG, "k_recall": K_RECALL, "k_ap": K_AP, "k_lift": K_LIFT}


@dataclass(frozen=True)
class SearchChoices:
    """One way to build the search. ``encoder`` names a key of :attr:`AblationInputs.images`.

    orientation: "train" draws one of the 8 dihedral transforms' embeddings per pair each epoch; "mean" embeds
        every cutout (and trains) on the mean over the 8; "train+mean" does both.
    text: "views" (description and summary as separate positives, one drawn per epoch), "mean" (their mean
        embedding), "description" (the description only) or "chunks" (each sentence, and the summary, a view).
    release_centring: each cutout's base embedding less its release's mean (plus the mean over all releases):
        a survey's look (resolution, depth, colour balance) is a shared offset of all its cutouts, and removing
        it needs no label, so a new release can be centred the day it lands.
    """

    encoder: str = "efficientnet-lite0"
    orientation: str = "none"
    text: str = "views"
    learn_temperature: bool = True
    ensemble: bool = False
    hubness: str = "none"
    demote_artefacts: bool = False
    release_centring: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (("orientation", self.orientation, ORIENTATIONS),
                                     ("text", self.text, TEXT_POSITIVES), ("hubness", self.hubness, HUBNESS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    def changes_from(self, other: SearchChoices) -> str:
        """"name=value" of each field that differs from ``other`` ("baseline" if none)."""
        mine, theirs = asdict(self), asdict(other)
        changed = [f"{k}={_show(v)}" for k, v in mine.items() if theirs[k] != v]
        return ", ".join(changed) or "baseline"

    def training_key(self) -> tuple:
        """The fields that change the trained heads (the rest act at ranking time, on the same heads)."""
        return (self.encoder, self.orientation, self.text, self.learn_temperature, self.release_centring)


# What the product builds (alignment_model, search_embeddings, the service): the ablation's baseline. A choice
# lands here only when the ablation measured it better (docs/search_ablations.md).
SERVED_CHOICES = SearchChoices(text="chunks", demote_artefacts=True)


def parse_variant(text: str, baseline: SearchChoices = SERVED_CHOICES) -> SearchChoices:
    """``"field=value, field=value"`` -> the baseline with those fields changed (booleans: on/off)."""
    changes: dict[str, object] = {}
    fields = {name: type(value) for name, value in asdict(baseline).items()}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = (x.strip() for x in part.partition("="))
        if name not in fields or not value:
            raise ValueError(f"{part!r}: expected field=value with field one of {', '.join(fields)}")
        if fields[name] is bool:
            if value not in ("on", "off"):
                raise ValueError(f"{part!r}: {name} is on or off")
            changes[name] = value == "on"
        else:
            changes[name] = value
    return replace(baseline, **changes)


def _show(value: object) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def one_at_a_time(baseline: SearchChoices, alternatives: dict[str, Sequence[object]]) -> list[SearchChoices]:
    """The baseline, then each alternative value of each field with every other field at the baseline's."""
    variants = [baseline]
    for name, values in alternatives.items():
        for value in values:
            variant = replace(baseline, **{name: value})
            if variant not in variants:
                variants.append(variant)
    return variants


@dataclass
class AblationInputs:
    """Everything an ablation ranks, in memory.

    objects: every cutout (release, object_id, sha256), row i of every image array.
    images: encoder -> [N, d] frozen base embeddings; dihedral: encoder -> [N, 8, d] (transform 0 = identity),
        needed only by choices that use orientation.
    described: (release, object_id, sha256, object_row, summary) of the described objects with cutouts.
    texts: "description", "summary" -> [M, dt], row-aligned with ``described``; "sentences" -> [M, S, dt]
        (NaN rows pad) for text="chunks".
    labels: (release, object_id, name, value); encode_queries: the text encoder over typed queries.
    probe_queries: what users type (the demo's), for hubness and artefact counts in their top 10.
    """

    objects: pl.DataFrame
    images: dict[str, np.ndarray]
    described: pl.DataFrame
    texts: dict[str, np.ndarray]
    labels: pl.DataFrame
    encode_queries: Callable[[list[str]], np.ndarray]
    dihedral: dict[str, np.ndarray] = field(default_factory=dict)
    probe_queries: tuple[str, ...] = ()
    targets: tuple[Target, ...] = TARGETS
    # (release, object_id, sha256) that no pool may hold beyond the described objects: what a compared image
    # encoder was trained on (the galaxy-pretrained one saw Galaxy Zoo labels)
    excluded: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        for name, array in self.images.items():
            if len(array) != self.objects.height:
                raise ValueError(f"images[{name!r}] has {len(array)} rows for {self.objects.height} objects")
        for name, array in self.texts.items():
            if len(array) != self.described.height:
                raise ValueError(f"texts[{name!r}] has {len(array)} rows for {self.described.height} described")


@dataclass(frozen=True)
class AblationPlan:
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.15
    split_seed: int = 1234
    train: TrainConfig = TrainConfig()
    loro: bool = True
    csls_k: int = 10


def image_views(inputs: AblationInputs, choices: SearchChoices) -> tuple[np.ndarray, np.ndarray]:
    """([N, d] the vector each cutout is indexed by, [N, A, d] the views training draws from)."""
    if choices.orientation == "none":
        indexed = np.asarray(inputs.images[choices.encoder], dtype=np.float32)
        trained_on = indexed[:, None, :]
    else:
        if choices.encoder not in inputs.dihedral:
            raise ValueError(f"orientation={choices.orientation!r} needs the dihedral embeddings of "
                             f"{choices.encoder}")
        views = np.asarray(inputs.dihedral[choices.encoder], dtype=np.float32)
        indexed = views.mean(axis=1) if "mean" in choices.orientation else views[:, 0]
        trained_on = views if "train" in choices.orientation else indexed[:, None, :]
    if choices.release_centring:
        offsets = release_offsets(indexed, inputs.objects["release"].to_numpy())
        indexed, trained_on = indexed - offsets, trained_on - offsets[:, None, :]
    return indexed, trained_on


def release_offsets(vectors: np.ndarray, releases: np.ndarray) -> np.ndarray:
    """[N, d]: each row's release mean less the mean over all rows, what release centring subtracts."""
    offsets = np.empty_like(vectors)
    overall = vectors.mean(axis=0)
    for release in np.unique(releases):
        rows = releases == release
        offsets[rows] = vectors[rows].mean(axis=0) - overall
    return offsets


def text_views(inputs: AblationInputs, choices: SearchChoices) -> np.ndarray:
    """[M, V, dt] positives of each described object under ``choices.text`` (NaN marks a missing view)."""
    return text_positives(inputs.texts, choices.text)


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(2, int(round(fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass
class TrainedHeads:
    """One seed's heads under one choice of training, applied: unit vectors of every cutout and a query encoder."""

    seed: int
    image_vectors: np.ndarray
    encode: Callable[[np.ndarray], np.ndarray]
    reference_texts: np.ndarray  # the training descriptions in the joint space (for CSLS and centring)
    val_mrr: float


def train_heads(inputs: AblationInputs, choices: SearchChoices, plan: AblationPlan, seed: int,
                held_out_release: str | None = None) -> TrainedHeads:
    """Heads on the described objects (less ``held_out_release``'s), checkpoint chosen on a validation split."""
    keep = np.ones(inputs.described.height, dtype=bool)
    if held_out_release is not None:
        keep = (inputs.described["release"] != held_out_release).to_numpy()
    rows = np.flatnonzero(keep)
    indexed, trained_on = image_views(inputs, choices)
    object_rows = inputs.described["object_row"].to_numpy()[rows]
    texts = text_views(inputs, choices)[rows]
    train, val = validation_split(len(rows), plan.val_fraction, plan.split_seed)
    config = clone_config(plan.train, seed=seed, learn_temperature=choices.learn_temperature)
    result = train_alignment(trained_on[object_rows[train]], texts[train], indexed[object_rows[val]], texts[val],
                             config)
    heads = result.heads()
    descriptions = inputs.texts["description"][rows[train]]
    return TrainedHeads(seed, embed_images(heads, indexed, device="cpu"),
                        lambda text: embed_texts(heads, text, device="cpu"),
                        embed_texts(heads, descriptions, device="cpu"), float(result.best_metrics["val_mrr"]))


class Ranker:
    """Scores of every cutout for a query under one choice's ranking-time options, over one or more heads."""

    def __init__(self, heads: Sequence[TrainedHeads], choices: SearchChoices, artefact_scores: np.ndarray | None,
                 csls_k: int) -> None:
        self.heads, self.choices, self.artefact_scores = list(heads), choices, artefact_scores
        self.vectors, self.penalties, self.text_means = [], [], []
        for h in self.heads:
            vectors = h.image_vectors
            if choices.hubness == "centre":
                vectors = centre(vectors, vectors.mean(axis=0))
                self.text_means.append(h.reference_texts.mean(axis=0))
            self.vectors.append(vectors)
            self.penalties.append(csls_penalty(vectors, h.reference_texts, csls_k) if choices.hubness == "csls"
                                  else None)

    def similarities(self, query_embeddings: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """[Q, N] the heads' mean similarity (CSLS- or centring-corrected as chosen) of text-encoder query
        embeddings [Q, dt] to every cutout, or to ``rows`` of them; no artefact demotion."""
        total = None
        for i, (h, vectors, penalty) in enumerate(zip(self.heads, self.vectors, self.penalties)):
            q = h.encode(query_embeddings)
            if self.choices.hubness == "centre":
                q = centre(q, self.text_means[i])
            picked = vectors if rows is None else vectors[rows]
            cosines = q @ picked.T
            if penalty is not None:
                cosines = csls_scores(cosines, (penalty if rows is None else penalty[rows])[None, :])
            total = cosines.astype(np.float64) if total is None else total + cosines
        return total / len(self.heads)

    def scores(self, query_embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        """[Q, N] ranking scores for text-encoder query embeddings [Q, dt] of the typed ``queries``."""
        total = self.similarities(query_embeddings)
        if self.choices.demote_artefacts and self.artefact_scores is not None:
            for row, query in enumerate(queries):
                if not query_asks_for_artefacts(query):
                    total[row] = demote_artefacts(total[row], self.artefact_scores)
        return total


def pools_without_described(inputs: AblationInputs) -> pl.DataFrame:
    """Every cutout less every described (and every excluded) object, by id and by image sha256; with its row
    into the arrays."""
    described = inputs.described.select("release", "object_id", "sha256")
    if inputs.excluded is not None:
        described = pl.concat([described, inputs.excluded.select("release", "object_id", "sha256")])
    candidates = inputs.objects.with_row_index("object_row").join(
        described.select("release", "object_id"), on=["release", "object_id"], how="anti")
    return candidates.filter(~pl.col("sha256").is_in(described["sha256"].drop_nulls().implode()))


def _figure_rows(scores: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    figures = evaluate_ranking(scores, relevance, **KS)
    return {k: v for k, v in figures.items() if k in HEADLINE_METRICS}


def evaluate_ranker(inputs: AblationInputs, ranker: Ranker, candidates: pl.DataFrame, pools: Sequence[str],
                    targets: Sequence[Target]) -> list[dict]:
    """(target, pool, metric, value, n_relevant, pool_size) of text search for ``targets`` in ``pools``."""
    available = [t for t in targets if inputs.objects.filter(pl.col("release") == t.release).height]
    if not available:
        return []
    queries = [t.query for t in available]
    scores = ranker.scores(inputs.encode_queries(queries), queries)
    rows = []
    for target, target_scores in zip(available, scores):
        for pool_name in pools:
            pool = target_pool(target, "release" if pool_name == LORO_POOL else pool_name, candidates,
                               inputs.labels)
            relevance = pool["relevance"].to_numpy()
            if relevance.sum() == 0:
                continue
            figures = _figure_rows(target_scores[pool["object_row"].to_numpy()], relevance)
            rows.extend({"target": target.name, "pool": pool_name, "metric": metric, "value": float(value),
                         "n_relevant": int(relevance.sum()), "pool_size": len(relevance)}
                        for metric, value in figures.items())
    return rows


def image_similarity_rows(inputs: AblationInputs, indexed: np.ndarray, candidates: pl.DataFrame,
                          max_queries: int = 500) -> list[dict]:
    """The image-similarity baseline on the same pools (the leave-one-release-out pool is the release pool)."""
    vectors = l2_normalise(indexed)
    rows = []
    for target in inputs.targets:
        for pool_name in ("release", "survey"):
            pool = target_pool(target, pool_name, candidates, inputs.labels)
            relevance = pool["relevance"].to_numpy()
            if pool.is_empty() or relevance.sum() == 0:
                continue
            figures = image_similarity_baseline(vectors[pool["object_row"].to_numpy()], relevance, K_NDCG, K_RECALL,
                                                max_queries=max_queries)
            for name in ([pool_name, LORO_POOL] if pool_name == "release" else [pool_name]):
                rows.extend({"target": target.name, "pool": name, "metric": metric, "value": float(figures[metric]),
                             "n_relevant": int(relevance.sum()), "pool_size": len(relevance)}
                            for metric in HEADLINE_METRICS if metric in figures)
    return rows


def probe_rows(inputs: AblationInputs, ranker: Ranker, artefact_scores: np.ndarray | None) -> dict[str, float]:
    """Hubness of the demo and target queries' top 10 over the whole collection, and how many of those top-10
    slots hold a likely artefact (artefact score >= the demotion threshold)."""
    queries = list(dict.fromkeys([*inputs.probe_queries, *(t.query for t in inputs.targets)]))
    if not queries:
        return {}
    scores = ranker.scores(inputs.encode_queries(queries), queries)
    summary = hubness_summary(scores, 10)
    figures = {"probe_n10_max": summary["n10_max"]}
    if artefact_scores is not None and inputs.probe_queries:
        probe = scores[: len(inputs.probe_queries)]
        top = np.argsort(-probe, axis=1)[:, :10]
        figures["probe_artefacts_in_top10"] = float((artefact_scores[top] >= DEMOTION_THRESHOLD).sum())
    return figures


def description_hubness(inputs: AblationInputs, ranker: Ranker, candidates: pl.DataFrame) -> float:
    """N10 skewness over the undescribed cutouts, with every description as a query (thousands of queries)."""
    scores = ranker.similarities(inputs.texts["description"], candidates["object_row"].to_numpy())
    return hubness_summary(scores, 10)["n10_skewness"]


def artefact_scores_for(inputs: AblationInputs, choices: SearchChoices,
                        exclude_release: str | None = None) -> np.ndarray | None:
    """Artefact scores of every cutout from a classifier fitted on the described objects' summaries (less
    ``exclude_release``'s); None when those name too few artefacts to fit one (nothing is then demoted, as in
    the product)."""
    keep = np.ones(inputs.described.height, dtype=bool)
    if exclude_release is not None:
        keep = (inputs.described["release"] != exclude_release).to_numpy()
    indexed, _ = image_views(inputs, choices)
    rows = inputs.described["object_row"].to_numpy()[keep]
    try:
        model = fit_artefact_model(indexed[rows], artefact_labels(inputs.described["summary"].to_list())[keep])
    except ValueError:
        return None
    return model.score(indexed)


def run_ablation(inputs: AblationInputs, variants: Sequence[SearchChoices], plan: AblationPlan,
                 baseline: SearchChoices | None = None,
                 progress: Callable[[str], None] = lambda message: None,
                 trained: dict[tuple, TrainedHeads] | None = None) -> pl.DataFrame:
    """Rows (variant, changes, replicate, target, pool, method, metric, value, n_relevant, pool_size) for every
    variant x replicate: text search, and image similarity of the variant's indexed vectors (replicate -1).

    ``trained``: heads already trained, by (training choices, seed, held-out release), filled as it goes: runs
    over other pools (training never depends on the pools) pass the same dict and train nothing twice."""
    baseline = baseline or variants[0]
    candidates = pools_without_described(inputs)
    releases = sorted({t.release for t in inputs.targets} & set(inputs.labels["release"].unique().to_list()))
    trained = {} if trained is None else trained

    def heads_for(choices: SearchChoices, seed: int, held_out: str | None) -> TrainedHeads:
        key = (choices.training_key(), seed, held_out)
        if key not in trained:
            progress(f"training {choices.changes_from(baseline)} seed {seed} held out {held_out or '-'}")
            trained[key] = train_heads(inputs, choices, plan, seed, held_out)
        return trained[key]

    rows: list[dict] = []
    image_baselines: dict[tuple, list[dict]] = {}
    for variant in variants:
        name = variant.changes_from(baseline)
        # scored whether or not this variant demotes: the artefacts in its top 10 are counted either way
        artefacts = artefact_scores_for(inputs, variant)
        artefacts_by_release = ({r: artefact_scores_for(inputs, variant, r) for r in releases}
                                if variant.demote_artefacts else {})
        seed_sets = ([tuple(s for s in plan.seeds if s != left) for left in plan.seeds]
                     if variant.ensemble and len(plan.seeds) > 1 else [(s,) for s in plan.seeds])
        for replicate, seeds in enumerate(seed_sets):
            ranker = Ranker([heads_for(variant, s, None) for s in seeds], variant,
                            artefacts if variant.demote_artefacts else None, plan.csls_k)
            found = evaluate_ranker(inputs, ranker, candidates, ("release", "survey"), inputs.targets)
            extra = {**probe_rows(inputs, ranker, artefacts),
                     "description_n10_skewness": description_hubness(inputs, ranker, candidates),
                     "val_mrr": float(np.mean([h.val_mrr for h in ranker.heads]))}
            found += [{"target": "-", "pool": "all", "metric": k, "value": v, "n_relevant": 0, "pool_size": 0}
                      for k, v in extra.items()]
            if plan.loro:
                for release in releases:
                    held = [t for t in inputs.targets if t.release == release]
                    loro = Ranker([heads_for(variant, s, release) for s in seeds], variant,
                                  artefacts_by_release.get(release), plan.csls_k)
                    found += evaluate_ranker(inputs, loro, candidates, (LORO_POOL,), held)
            rows += [{"variant": name, "replicate": replicate, "method": "text_search", **r} for r in found]
        # what image_views indexes by: the encoder, the mean over orientations or not, release centring or not
        image_key = (variant.encoder, "mean" in variant.orientation, variant.release_centring)
        if image_key not in image_baselines:
            indexed, _ = image_views(inputs, variant)
            image_baselines[image_key] = image_similarity_rows(inputs, indexed, candidates)
        rows += [{"variant": name, "replicate": -1, "method": "image_similarity", **r}
                 for r in image_baselines[image_key]]
    return pl.DataFrame(rows).with_columns(pl.col("replicate").cast(pl.Int32))


def summarise(rows: pl.DataFrame) -> pl.DataFrame:
    """Mean, spread (sample std) and count over replicates of every variant x target x pool x method x metric
    (and x ``pools_exclude`` when the rows carry it)."""
    keys = ["variant", "target", "pool", "method", "metric"]
    keys += ["pools_exclude"] if "pools_exclude" in rows.columns else []
    return (rows.group_by(keys, maintain_order=True)
            .agg(mean=pl.col("value").mean(), std=pl.col("value").std().fill_null(0.0),
                 replicates=pl.len().cast(pl.Int32), n_relevant=pl.col("n_relevant").first(),
                 pool_size=pl.col("pool_size").first()))


def ablation_table(summary: pl.DataFrame, metric: str = f"ndcg@{K_NDCG}") -> pl.DataFrame:
    """One row per variant, one column per target/pool: "mean ± std" of text search's ``metric``; then image
    similarity on each distinct set of indexed vectors (the baseline's, and any variant's that changes them)."""
    cells = (summary.filter((pl.col("metric") == metric) & (pl.col("target") != "-"))
             .with_columns(column=pl.concat_str("target", pl.lit("/"), "pool"),
                           cell=pl.format("{} ± {}", pl.col("mean").round(3), pl.col("std").round(3)))
             .with_columns(row=pl.when(pl.col("method") == "text_search").then(pl.col("variant"))
                           .otherwise(pl.format("image similarity ({})", pl.col("variant")))))
    table = cells.pivot(on="column", index="row", values="cell", aggregate_function="first")
    text_rows = table.filter(~pl.col("row").str.starts_with("image similarity"))
    image_rows = table.filter(pl.col("row").str.starts_with("image similarity"))
    image_rows = image_rows.unique(subset=[c for c in image_rows.columns if c != "row"], keep="first",
                                   maintain_order=True)
    return pl.concat([text_rows, image_rows]).rename({"row": "variant"})


PROBE_METRICS = ("probe_artefacts_in_top10", "probe_n10_max", "description_n10_skewness", "val_mrr")


def probe_table(summary: pl.DataFrame) -> pl.DataFrame:
    """One row per variant: artefacts in the demo queries' top 10, the largest N10 among the demo and target
    queries, the N10 skewness with every description as a query, validation MRR; "mean ± std" each."""
    cells = (summary.filter(pl.col("metric").is_in(PROBE_METRICS))
             .with_columns(cell=pl.format("{} ± {}", pl.col("mean").round(3), pl.col("std").round(3))))
    table = cells.pivot(on="metric", index="variant", values="cell", aggregate_function="first")
    return table.select("variant", *(m for m in PROBE_METRICS if m in table.columns))
