"""The search chain as assets: alignment heads (MLflow), search embeddings, FAISS indexes, evaluation."""


import json
import time
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from aion_assets.encoders.resources import (
    ImageEncoderResource,
    TextEncoderResource,
    image_encoder_version,
    text_encoder_version,
)
from aion_assets.platform.layout import (
    DESCRIPTION_SAMPLE,
    IMAGE_SIMILARITY_INDEX_DIR,
    SEARCH_INDEX_DIR,
    array_fingerprint,
    image_base_embeddings_path,
    search_embeddings_path,
    text_embeddings_dir,
)
from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.partitions import release_shards
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.search.artifacts import (
    heads_metadata_from_lake,
    load_heads_from_lake,
    save_heads_to_lake,
    save_index_to_lake,
)
from aion_assets.search.evaluation import K_NDCG, evaluate_all, targets_below_baseline
from aion_assets.search.index import build_index, recall_at_k
from aion_assets.search.resources import AlignmentTrainingConfig, EvaluationConfig, IndexConfig
from aion_assets.search.targets import targets_version
from aion_assets.search.training import TrainConfig, embed_images, embed_texts, seed_summary, train_alignment
from aion_assets.search.vectors import gather_vectors, normalise
from aion_assets.vlm.client import has_api_key

CODE_REVISION = "1"
EXPERIMENT = "aion-search"
REGISTERED_MODEL = "aion-search-heads"


def _input_data_versions(context: dg.AssetExecutionContext, keys: list[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for key in keys:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
        tags = (event.asset_materialization.tags or {}) if event and event.asset_materialization else {}
        versions[key] = tags.get("dagster/data_version")
    return versions


def _cutout_rows(warehouse) -> pl.DataFrame:
    return warehouse.get().query(
        "SELECT release, shard, row, object_id FROM cutouts ORDER BY release, shard, row"
    )


def build_search_assets() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    # The models in use are part of every code version here: switching the text or image model marks the heads
    # and everything after them as changed, through the lineage, without anyone remembering to.
    model_version = f"{CODE_REVISION}-{image_encoder_version()}-{text_encoder_version()}"

    @dg.asset(
        group_name="training",
        deps=["text_embeddings", "image_base_embeddings", "description_sample"],
        code_version=model_version,
        pool="gpu",
        kinds={"pytorch", "mlflow"},
    )
    def alignment_model(
        context: dg.AssetExecutionContext,
        config: AlignmentTrainingConfig,
        lake: LakeResource,
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
        image_encoder: ImageEncoderResource,
        text_encoder: TextEncoderResource,
    ) -> dg.MaterializeResult:
        """Image and text projection heads trained with symmetric InfoNCE so that a frozen image model's
        embeddings meet the text embeddings of their descriptions. One MLflow run per materialization, a new
        version of the registered model `aion-search-heads`, and the best validation checkpoint in the lake."""
        import mlflow as mlflow_api
        from mlflow.tracking import MlflowClient

        store = lake.get()
        text_name, image_name = text_encoder.load().name, image_encoder.load().name
        folder = text_embeddings_dir(text_name)
        text_ids = store.read_parquet(*folder, "ids.parquet")
        descriptions = store.read_array(*folder, "description.npy")
        summaries = store.read_array(*folder, "summary.npy")
        located = text_ids.with_row_index("text_row").join(
            _cutout_rows(warehouse), on=["release", "object_id"], how="inner"
        )
        if located.height < 8:
            raise dg.Failure(f"only {located.height} described objects have cutouts; need at least 8 to train")
        _, images = gather_vectors(store, located, lambda key: image_base_embeddings_path(image_name, key))
        text_rows = located["text_row"].to_numpy()
        texts = (descriptions[text_rows], summaries[text_rows])

        rng = np.random.default_rng(config.split_seed)
        order = rng.permutation(len(images))
        n_val = max(4, int(round(config.val_fraction * len(images))))
        val, train = order[:n_val], order[n_val:]

        experiment_id = mlflow.experiment(EXPERIMENT)
        results = []
        with mlflow_api.start_run(experiment_id=experiment_id, run_name=f"alignment-{context.run.run_id[:8]}") as run:
            mlflow_api.log_params({
                **config.model_dump(exclude={"seeds"}), "seeds": ",".join(map(str, config.seeds)),
                "image_encoder": image_name, "text_encoder": text_name,
                "n_train": len(train), "n_val": len(val), "dagster_run_id": context.run.run_id,
            })
            for seed in config.seeds:
                train_config = TrainConfig(
                    epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                    weight_decay=config.weight_decay, warmup_fraction=config.warmup_fraction,
                    hidden_dim=config.hidden_dim, out_dim=config.output_dim, n_blocks=config.n_blocks,
                    dropout=config.dropout, seed=seed,
                )

                def log_epoch(row: dict, seed: int = seed) -> None:
                    mlflow_api.log_metrics({f"seed{seed}/{k}": float(v) for k, v in row.items()
                                            if isinstance(v, (int, float)) and v is not None and k != "epoch"},
                                           step=int(row["epoch"]))

                result = train_alignment(images[train], [t[train] for t in texts], images[val],
                                         [t[val] for t in texts], train_config, on_epoch=log_epoch)
                results.append(result)
                best_metrics = result.best_metrics
                context.log.info(f"seed {seed}: best epoch {result.best_epoch}, val MRR {best_metrics['val_mrr']:.3f}, "
                                 f"median rank {best_metrics['val_median_rank']:.0f}, val loss "
                                 f"{best_metrics['val_loss']:.3f}")
            best = max(results, key=lambda r: r.best_metrics["val_mrr"])
            for row in best.history:  # the kept seed's curves under plain names
                mlflow_api.log_metrics({k: float(v) for k, v in row.items()
                                        if isinstance(v, (int, float)) and k != "epoch"}, step=int(row["epoch"]))
            spread = seed_summary(results)["val_mrr"]
            mlflow_api.log_metrics({"val_mrr_mean": spread["mean"], "val_mrr_std": spread["std"],
                                    "best_val_mrr": spread["max"]})
            input_versions = _input_data_versions(context, ["text_embeddings", "vlm_descriptions",
                                                            "description_sample"])
            heads = best.heads()
            lake_path, local = save_heads_to_lake(store, heads, {
                "mlflow_run_id": run.info.run_id, "image_encoder": image_name, "text_encoder": text_name,
                "input_data_versions": json.dumps(input_versions),
            })
            mlflow_api.log_artifact(str(local), artifact_path="heads")
            client = MlflowClient()
            try:
                client.get_registered_model(REGISTERED_MODEL)
            except Exception:
                client.create_registered_model(REGISTERED_MODEL, description="AION-Search projection heads")
            version = client.create_model_version(
                REGISTERED_MODEL, source=f"{run.info.artifact_uri}/heads", run_id=run.info.run_id,
                tags={"image_encoder": image_name, "text_encoder": text_name},
            )
        return dg.MaterializeResult(
            metadata={
                "mlflow_run_id": run.info.run_id,
                "model_version": int(version.version),
                "registered_model": REGISTERED_MODEL,
                "input_data_versions": input_versions,
                "n_train": len(train), "n_val": len(val),
                "val_mrr_mean": spread["mean"], "val_mrr_std": spread["std"], "seeds": len(results),
                "best_seed": int(config.seeds[results.index(best)]), "best_epoch": int(best.best_epoch),
                "temperature": float(heads.temperature),
                "checkpoint": dg.MetadataValue.path(lake_path),
            },
            data_version=dg.DataVersion(f"{run.info.run_id}"),
        )

    @dg.asset(
        partitions_def=release_shards,
        group_name="index",
        deps=["alignment_model", "image_base_embeddings"],
        code_version=model_version,
        kinds={"pytorch"},
        automation_condition=dg.AutomationCondition.eager(),
    )
    def search_embeddings(
        context: dg.AssetExecutionContext, lake: LakeResource, image_encoder: ImageEncoderResource
    ) -> dg.MaterializeResult:
        """The image head applied to every cutout's base embedding: vectors in the shared text-image space."""
        store = lake.get()
        base = store.read_array(*image_base_embeddings_path(image_encoder.load().name, context.partition_key))
        vectors = embed_images(load_heads_from_lake(store), base)
        path = store.write_array(vectors, *search_embeddings_path(context.partition_key))
        return dg.MaterializeResult(
            metadata={"vectors": len(vectors), "dim": int(vectors.shape[1]), "path": dg.MetadataValue.path(path)},
            data_version=dg.DataVersion(array_fingerprint(vectors)),
        )

    def _build_and_save(context, store, config: IndexConfig, vectors: np.ndarray, ids: pl.DataFrame,
                        parts: tuple[str, ...]) -> dg.MaterializeResult:
        started = time.perf_counter()
        index = build_index(vectors, ids.select("release", "object_id"), kind=config.kind,
                            exact_threshold=config.exact_threshold)
        seconds = time.perf_counter() - started
        recall = recall_at_k(index, vectors, config.recall_sample, k=min(100, len(vectors)))
        nbytes = save_index_to_lake(store, index, parts)
        return dg.MaterializeResult(metadata={
            "vectors": int(index.ntotal), "dim": int(vectors.shape[1]), "index_type": index.kind,
            "build_seconds": round(seconds, 3), "bytes": nbytes, "recall_at_100": round(float(recall), 4),
        }, data_version=dg.DataVersion(array_fingerprint(vectors)))

    # Rebuilt once a day when shards changed beneath them: at survey scale, once per shard would be thousands.
    daily_rebuild = dg.AutomationCondition.on_cron("0 7 * * *")

    @dg.asset(group_name="index", deps=["search_embeddings"], code_version=model_version, kinds={"faiss"},
              automation_condition=daily_rebuild)
    def search_index(context: dg.AssetExecutionContext, config: IndexConfig, lake: LakeResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
        """FAISS inner-product index over every search embedding, with its id map back to (release, object_id)."""
        store = lake.get()
        ids, vectors = gather_vectors(store, _cutout_rows(warehouse), search_embeddings_path)
        return _build_and_save(context, store, config, vectors, ids, SEARCH_INDEX_DIR)

    @dg.asset(group_name="index", deps=["image_base_embeddings"],
              code_version=f"{CODE_REVISION}-{image_encoder_version()}", kinds={"faiss"},
              automation_condition=daily_rebuild)
    def image_similarity_index(context: dg.AssetExecutionContext, config: IndexConfig, lake: LakeResource,
                               warehouse: WarehouseResource, image_encoder: ImageEncoderResource
                               ) -> dg.MaterializeResult:
        """The baseline: FAISS index over the frozen image model's (normalised) base embeddings."""
        store = lake.get()
        name = image_encoder.load().name
        ids, vectors = gather_vectors(store, _cutout_rows(warehouse),
                                      lambda key: image_base_embeddings_path(name, key))
        return _build_and_save(context, store, config, normalise(vectors), ids, IMAGE_SIMILARITY_INDEX_DIR)

    @dg.asset(
        group_name="evaluation",
        deps=["search_index", "image_similarity_index", "alignment_model", "description_sample", "raw_cutouts"],
        code_version=f"{model_version}-targets-{targets_version()}",
        pool="duckdb_writer",
        kinds={"duckdb", "mlflow"},
    )
    def retrieval_eval(context: dg.AssetExecutionContext, config: EvaluationConfig, lake: LakeResource,
                       warehouse: WarehouseResource,
                       mlflow: MlflowResource, text_encoder: TextEncoderResource,
                       image_encoder: ImageEncoderResource) -> dg.MaterializeResult:
        """nDCG@10 and recall@100 of text search, the image-similarity baseline and random ranking, for each
        labelled rare target, on pools that leave out every object whose description trained the heads."""
        import mlflow as mlflow_api
        from mlflow.tracking import MlflowClient

        store, wh = lake.get(), warehouse.get()
        heads = load_heads_from_lake(store)
        encoder, image_name = text_encoder.load(), image_encoder.load().name
        cutouts = wh.query("SELECT release, shard, row, object_id FROM cutouts")
        labels = wh.query("SELECT release, object_id, name, value FROM labels")
        excluded = store.read_parquet(*DESCRIPTION_SAMPLE).select("release", "object_id")

        def vectors_for(pool: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            _, search = gather_vectors(store, pool, search_embeddings_path)
            _, base = gather_vectors(store, pool, lambda key: image_base_embeddings_path(image_name, key))
            return search, normalise(base)

        rerank = None
        if has_api_key() and config.rerank_candidates > 0:
            rerank = _vlm_reranker(context, store, wh, config)
        else:
            context.log.info("no `reranked` method: it needs ANTHROPIC_API_KEY and rerank_candidates > 0")
        figures = evaluate_all(cutouts, labels, excluded, vectors_for,
                               lambda queries: embed_texts(heads, encoder.encode(queries)), rerank=rerank)
        if figures.is_empty():
            raise dg.Failure("no labelled target is ingested: nothing to evaluate")
        run_id = heads_metadata_from_lake(store)["mlflow_run_id"]
        client = MlflowClient(tracking_uri=mlflow.tracking_uri)
        versions = client.search_model_versions(f"name='{REGISTERED_MODEL}' and run_id='{run_id}'")
        model_version = int(versions[0].version) if versions else None
        figures = figures.with_columns(
            pl.lit(model_version, dtype=pl.Int64).alias("model_version"),
            pl.lit(datetime.now(timezone.utc)).alias("created_at"),
        )
        wh.append("eval_results", figures)
        mlflow.experiment(EXPERIMENT)
        with mlflow_api.start_run(run_id=run_id):
            mlflow_api.log_metrics({f"eval/{r['target']}/{r['method']}/{r['metric'].replace('@', '_at_')}": r["value"]
                                    for r in figures.iter_rows(named=True)})
        headline = figures.filter(pl.col("metric") == f"ndcg@{K_NDCG}").pivot(
            on="method", index="target", values="value")
        return dg.MaterializeResult(metadata={
            "model_version": model_version, "mlflow_run_id": run_id, "rows": figures.height,
            f"ndcg@{K_NDCG}": dg.MetadataValue.md(markdown_table(headline)),
        })

    @dg.asset_check(asset=retrieval_eval, description="Text search must not score below the image-similarity "
                    "baseline (nDCG@10) on any target.", blocking=False)
    def text_search_beats_image_similarity(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        latest = warehouse.get().query(
            "SELECT target, method, metric, value FROM eval_results "
            "WHERE created_at = (SELECT max(created_at) FROM eval_results)")
        table, losing = targets_below_baseline(latest)
        return dg.AssetCheckResult(
            passed=not losing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"targets_below_baseline": losing,
                      "figures": dg.MetadataValue.md(markdown_table(table))},
        )

    return ([alignment_model, search_embeddings, search_index, image_similarity_index, retrieval_eval],
            [text_search_beats_image_similarity])


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
