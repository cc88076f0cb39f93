"""The evaluation group: ``retrieval_eval`` over two pools per target, and the checks that guard it.

A pool never holds an object that trained the heads being evaluated: the heads carry their training set
(release, object_id, image sha256), pools exclude it by id and by image, and a blocking check proves it from what
was actually ranked (``evaluation/v<N>/pools.parquet``).
"""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from aion_assets.encoders.finetuned import encoder_trained_on
from aion_assets.encoders.resources import ImageEncoderResource, TextEncoderResource
from aion_assets.platform.layout import (
    evaluation_gallery_path,
    evaluation_pools_path,
    image_base_embeddings_path,
    search_embeddings_path,
)
from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.search.artifacts import (
    heads_metadata_from_lake,
    load_heads_from_lake,
    load_training_set,
    resolve_version,
)
from aion_assets.search.assets import EXPERIMENT, cutout_rows, models_code_version
from aion_assets.search.evaluation import (
    K_NDCG,
    Evaluation,
    encoder_comparison,
    evaluate_all,
    targets_below_baseline,
    training_overlap,
)
from aion_assets.search.plots import eval_bars_png, search_gallery_png
from aion_assets.search.resources import EvaluationConfig
from aion_assets.search.targets import TARGETS, targets_version
from aion_assets.search.thumbnails import result_images
from aion_assets.search.training import embed_texts
from aion_assets.search.vectors import gather_vectors, l2_normalise
from aion_assets.vlm.client import has_api_key


class RetrievalEvalConfig(EvaluationConfig):
    """Which heads version to evaluate: None is the served one (what ``search_index`` just indexed)."""

    model_version: int | None = None
    # Image encoders (e.g. "zoo-lite0-v1") whose training objects leave the pools too, beyond the evaluated
    # version's own: evaluating the ImageNet heads on exactly the pools a galaxy-pretrained encoder allows
    # puts the two side by side.
    exclude_trained_by: list[str] = []


def _latest_figures(warehouse: WarehouseResource) -> pl.DataFrame:
    # retrieval_eval's own rows: search_ablations adds leave-one-release-out rows of unregistered heads
    return warehouse.get().query(
        "SELECT * FROM eval_results WHERE created_at = (SELECT max(created_at) FROM eval_results "
        "WHERE model_version IS NOT NULL) AND model_version IS NOT NULL")


def build_evaluation_assets() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    @dg.asset(
        group_name="evaluation",
        deps=["search_index", "image_similarity_index", "alignment_model", "raw_cutouts"],
        code_version=f"{models_code_version()}-targets-{targets_version()}",
        pool="duckdb_writer",
        kinds={"duckdb", "mlflow"},
    )
    def retrieval_eval(context: dg.AssetExecutionContext, config: RetrievalEvalConfig, lake: LakeResource,
                       warehouse: WarehouseResource, mlflow: MlflowResource, text_encoder: TextEncoderResource,
                       image_encoder: ImageEncoderResource) -> dg.MaterializeResult:
        """nDCG@10, recall@100, AP@100 and lift@10 of text search, the image-similarity baseline and random
        ranking, for each labelled rare target in two pools (`release`: the release publishing the label;
        `survey`: every labelled release, a lower bound), on objects that never trained the heads (by id and by
        image sha256). Rows in `eval_results`, metrics on the heads' MLflow run, a bar chart and a gallery."""
        import mlflow as mlflow_api

        store, wh = lake.get(), warehouse.get()
        version = resolve_version(store, config.model_version)
        heads, training_set = load_heads_from_lake(store, version), load_training_set(store, version)
        heads_metadata = heads_metadata_from_lake(store, version)
        # The image model the version was trained on (an older version may predate the configured one).
        image_id = heads_metadata.get("image_encoder", image_encoder.artifact_id)
        excluded = excluded_objects(store, training_set, [image_id, *config.exclude_trained_by])
        encoder = text_encoder.load()

        def vectors_for(pool: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            _, search = gather_vectors(store, pool, lambda key: search_embeddings_path(version, key))
            _, base = gather_vectors(store, pool, lambda key: image_base_embeddings_path(image_id, key))
            return search, l2_normalise(base)

        rerank = None
        if has_api_key() and config.rerank_candidates > 0:
            rerank = _vlm_reranker(context, store, wh, config)
        else:
            context.log.info("no `reranked` method: it needs ANTHROPIC_API_KEY and rerank_candidates > 0")
        evaluation = evaluate_all(cutout_rows(warehouse), wh.query("SELECT release, object_id, name, value FROM labels"),
                                  excluded, vectors_for, lambda queries: embed_texts(heads, encoder.encode(queries)),
                                  rerank=rerank, gallery_k=config.gallery_size)
        if evaluation.figures.is_empty():
            raise dg.Failure("no labelled target is ingested: nothing to evaluate")
        store.write_parquet(evaluation.pools, *evaluation_pools_path(version))
        figures = evaluation.figures.with_columns(
            pl.lit(version, dtype=pl.Int64).alias("model_version"),
            pl.lit(image_id).alias("image_encoder"),
            pl.lit(",".join(sorted(excluded["excluded_by"].unique().to_list()))).alias("excluded_by"),
            pl.lit(datetime.now(timezone.utc)).alias("created_at"),
        )
        wh.append("eval_results", figures)
        run_id = heads_metadata["mlflow_run_id"]
        bars, gallery = eval_bars_png(figures, f"ndcg@{K_NDCG}"), _gallery(store, wh, evaluation)
        store.write_bytes(gallery, *evaluation_gallery_path(version))  # for `aion report --out`
        mlflow.experiment(EXPERIMENT)
        with mlflow_api.start_run(run_id=run_id):
            mlflow_api.log_metrics({f"eval/{r['pool']}/{r['target']}/{r['method']}/{r['metric'].replace('@', '_at_')}":
                                    r["value"] for r in figures.iter_rows(named=True)})
        headline, _ = targets_below_baseline(figures)
        by_encoder = encoder_comparison(wh.query("SELECT * FROM eval_results"))
        return dg.MaterializeResult(metadata={
            "model_version": version, "mlflow_run_id": run_id, "rows": figures.height,
            "pooled_objects": evaluation.pools.height, "training_set": training_set.height,
            "image_encoder": image_id, "excluded_objects": excluded.height,
            f"ndcg@{K_NDCG}": dg.MetadataValue.md(markdown_table(headline, max_rows=len(TARGETS) * 2)),
            "by_image_encoder": dg.MetadataValue.md(markdown_table(by_encoder, max_rows=80)),
            "figures": dg.MetadataValue.md(png_markdown(bars, f"nDCG@{K_NDCG} per target, method and pool")),
            "gallery": dg.MetadataValue.md(png_markdown(gallery, "top text-search results per target (survey pool)")),
        })

    @dg.asset_check(asset=retrieval_eval, blocking=True,
                    description="No pooled object is in the evaluated heads' training set or its image encoder's, "
                    "by (release, object_id) or by image sha256: a figure on training images would not be a "
                    "zero-shot figure.")
    def pools_exclude_training_set(lake: LakeResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = lake.get()
        latest = _latest_figures(warehouse)
        version = int(latest["model_version"][0])
        pools = store.read_parquet(*evaluation_pools_path(version))
        image_id = heads_metadata_from_lake(store, version).get("image_encoder", "")
        overlap = training_overlap(pools, excluded_objects(store, load_training_set(store, version), [image_id]))
        return dg.AssetCheckResult(passed=overlap.is_empty(), metadata={
            "model_version": version, "pooled_objects": pools.height, "overlapping_objects": overlap.height,
            "overlap": dg.MetadataValue.md(markdown_table(overlap)) if overlap.height else "none",
        })

    @dg.asset_check(asset=retrieval_eval, description="Text search must not score below the image-similarity "
                    "baseline (nDCG@10) on any target and pool.", blocking=False)
    def text_search_beats_image_similarity(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        table, losing = targets_below_baseline(_latest_figures(warehouse))
        return dg.AssetCheckResult(
            passed=not losing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"targets_below_baseline": losing, "figures": dg.MetadataValue.md(markdown_table(table))},
        )

    return [retrieval_eval], [pools_exclude_training_set, text_search_beats_image_similarity]


def excluded_objects(store, training_set: pl.DataFrame, image_encoders: list[str]) -> pl.DataFrame:
    """(release, object_id, sha256, excluded_by) of everything that trained the heads ("heads") or one of the
    image encoders (its name): no pool may hold them."""
    frames = [training_set.select("release", "object_id", "sha256").with_columns(excluded_by=pl.lit("heads"))]
    for spec in dict.fromkeys(image_encoders):
        trained = encoder_trained_on(store, spec)
        if trained.height:
            frames.append(trained.with_columns(excluded_by=pl.lit(spec)))
    return pl.concat(frames)


def _gallery(store, warehouse, evaluation: Evaluation) -> bytes:
    """Top text-search results of each target in its survey pool, relevant ones marked."""
    queries = {t.name: t.query for t in TARGETS}
    rows = []
    hits = evaluation.top_hits.filter(pl.col("pool") == "survey")
    for target in hits["target"].unique(maintain_order=True).to_list():
        top = hits.filter(pl.col("target") == target).sort("rank")
        images = result_images(store, warehouse, top)
        cells = [(image, bool(hit["relevance"]), f"#{hit['rank']} {hit['score']:.2f}")
                 for image, hit in zip(images, top.iter_rows(named=True))]
        rows.append((f"{target}: {queries.get(target, '')}", cells))
    return search_gallery_png(rows)


def _vlm_reranker(context, store, warehouse, config: EvaluationConfig):
    """The `reranked` method: the VLM judges the top candidates of each target's text search."""
    from aion_assets.search.evaluation import reranked_order_scores
    from aion_assets.search.reranking import rerank_results

    def rerank_target(target, pool: pl.DataFrame, text_scores: np.ndarray) -> np.ndarray:
        top = np.argsort(-text_scores, kind="stable")[: config.rerank_candidates]
        candidates = pool[top.tolist()].with_columns(pl.Series("score", text_scores[top]))
        rows = rerank_results(store, warehouse, target.query, candidates, samples=config.rerank_samples,
                              log=context.log)
        position = {oid: int(row) for oid, row in zip(candidates["object_id"], top)}
        ordered = [position[row.object_id] for row in rows]
        return reranked_order_scores(text_scores, ordered)

    return rerank_target
