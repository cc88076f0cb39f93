"""The search chain as assets: alignment heads (MLflow), search embeddings, FAISS indexes.

Every heads version is its own folder in the lake (``v<registered model version>``): the heads, their training
set, their search embeddings and their index. ``search_index`` names the version it just indexed as the served
one (``models/alignment/latest.json``), so an app can keep serving while the next version trains.
"""


import json
import time

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
    ZOO_DATASET,
    array_fingerprint,
    heads_artifact_id,
    image_base_embeddings_path,
    image_similarity_index_dir,
    search_embeddings_path,
    search_index_dir,
    text_embeddings_dir,
    training_curves_path,
)
from aion_assets.platform.partitions import release_shards
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.platform.tracking import log_png, register_version
from aion_assets.search.artifacts import (
    heads_metadata_from_lake,
    load_heads_from_lake,
    newest_trained_version,
    save_heads_to_lake,
    save_index_to_lake,
    write_latest_pointer,
)
from aion_assets.search.index import build_index, index_recall_at_k
from aion_assets.search.plots import training_curves_png
from aion_assets.search.resources import AlignmentTrainingConfig, IndexConfig
from aion_assets.search.training import embed_images, seed_summary, train_alignment
from aion_assets.search.vectors import gather_vectors, l2_normalise
from aion_assets.search.versions import REGISTERED_MODEL

CODE_REVISION = "2"
EXPERIMENT = "aion-search"


def input_data_versions(context: dg.AssetExecutionContext, keys: list[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for key in keys:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
        tags = (event.asset_materialization.tags or {}) if event and event.asset_materialization else {}
        versions[key] = tags.get("dagster/data_version")
    return versions


def cutout_rows(warehouse: WarehouseResource) -> pl.DataFrame:
    """(release, shard, row, object_id, sha256) of every ingested cutout, in shard order."""
    return warehouse.get().query(
        "SELECT release, shard, row, object_id, sha256 FROM cutouts ORDER BY release, shard, row"
    )


def models_code_version() -> str:
    """The models in use are part of every code version here: switching the text or image model (or its
    precision) marks the heads and everything after them as changed, through the lineage."""
    return f"{CODE_REVISION}-{image_encoder_version()}-{text_encoder_version()}"


def _training_pairs(store, warehouse, image_id: str, text_id: str):
    """Described objects that have cutouts: their ids (with image sha256), image vectors and text views."""
    folder = text_embeddings_dir(text_id)
    text_ids = store.read_parquet(*folder, "ids.parquet")
    descriptions = store.read_array(*folder, "description.npy")
    summaries = store.read_array(*folder, "summary.npy")
    located = text_ids.with_row_index("text_row").join(cutout_rows(warehouse), on=["release", "object_id"],
                                                       how="inner")
    located = _without_held_out(store, located)
    if located.height < 8:
        raise dg.Failure(f"only {located.height} described objects have cutouts; need at least 8 to train")
    _, images = gather_vectors(store, located, lambda key: image_base_embeddings_path(image_id, key))
    text_rows = located["text_row"].to_numpy()
    return located, images, (descriptions[text_rows], summaries[text_rows])


def _without_held_out(store, located: pl.DataFrame) -> pl.DataFrame:
    """Described objects less the Galaxy Zoo study's test split (by id and by image): those objects are held out
    of every training in the project, so the study's test figures stay test figures."""
    if not store.exists(*ZOO_DATASET):
        return located
    test = store.read_parquet(*ZOO_DATASET).filter(pl.col("split") == "test")
    kept = located.join(test.select("release", "object_id"), on=["release", "object_id"], how="anti")
    return kept.filter(~pl.col("sha256").is_in(test["sha256"].implode()))


def build_training_assets() -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="training",
        deps=["text_embeddings", "image_base_embeddings", "description_sample", "zoo_dataset"],
        code_version=models_code_version(),
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
        version of the registered model `aion-search-heads`, and that version's folder in the lake: the best
        validation checkpoint and its training set (release, object_id, image sha256 of every object used)."""
        import mlflow as mlflow_api

        store = lake.get()
        image_id, text_id = image_encoder.artifact_id, text_encoder.artifact_id
        located, images, texts = _training_pairs(store, warehouse, image_id, text_id)

        rng = np.random.default_rng(config.split_seed)
        order = rng.permutation(len(images))
        n_val = max(4, int(round(config.val_fraction * len(images))))
        val, train = order[:n_val], order[n_val:]
        split = np.full(len(images), "train", dtype=object)
        split[val] = "val"
        training_set = located.select("release", "object_id", "sha256").with_columns(
            pl.Series("split", split.tolist(), dtype=pl.String))

        experiment_id = mlflow.experiment(EXPERIMENT)
        results = []
        with mlflow_api.start_run(experiment_id=experiment_id, run_name=f"alignment-{context.run.run_id[:8]}") as run:
            mlflow_api.log_params({
                **config.model_dump(exclude={"seeds"}), "seeds": ",".join(map(str, config.seeds)),
                "image_encoder": image_id, "text_encoder": text_id,
                "n_train": len(train), "n_val": len(val), "dagster_run_id": context.run.run_id,
            })
            for seed in config.seeds:
                def log_epoch(row: dict, seed: int = seed) -> None:
                    mlflow_api.log_metrics({f"seed{seed}/{k}": float(v) for k, v in row.items()
                                            if isinstance(v, (int, float)) and v is not None and k != "epoch"},
                                           step=int(row["epoch"]))

                result = train_alignment(images[train], [t[train] for t in texts], images[val],
                                         [t[val] for t in texts], config.train_config(seed), on_epoch=log_epoch)
                results.append(result)
                best_metrics = result.best_metrics
                context.log.info(f"seed {seed}: best epoch {result.best_epoch}, val MRR {best_metrics['val_mrr']:.3f}, "
                                 f"median rank {best_metrics['val_median_rank']:.0f}, val loss "
                                 f"{best_metrics['val_loss']:.3f}")
            best = max(results, key=lambda r: r.best_metrics["val_mrr"])
            best_seed = int(config.seeds[results.index(best)])
            for row in best.history:  # the kept seed's curves under plain names
                mlflow_api.log_metrics({k: float(v) for k, v in row.items()
                                        if isinstance(v, (int, float)) and k != "epoch"}, step=int(row["epoch"]))
            spread = seed_summary(results)["val_mrr"]
            mlflow_api.log_metrics({"val_mrr_mean": spread["mean"], "val_mrr_std": spread["std"],
                                    "best_val_mrr": spread["max"]})
            curves = training_curves_png({int(s): r.history for s, r in zip(config.seeds, results)}, best_seed,
                                         selected_epoch=best.best_epoch)
            log_png(curves, "training_curves.png")
            input_versions = input_data_versions(context, ["text_embeddings", "vlm_descriptions",
                                                           "description_sample"])
            heads = best.heads()
            checkpoint = _log_heads_artifacts(mlflow_api, heads, training_set, run.info.run_id, image_id, text_id,
                                              input_versions)
            model_version = register_version(
                REGISTERED_MODEL, "AION-Search projection heads", run, "heads",
                {"image_encoder": image_id, "text_encoder": text_id, "n_train": str(len(train))})
            mlflow_api.set_tag("model_version", str(model_version))
        # The lake copy last: a version folder exists only for a version MLflow has registered.
        lake_path = save_heads_to_lake(store, model_version, heads, checkpoint, training_set)
        store.write_bytes(curves, *training_curves_path(model_version))  # for `aion report --out`
        return dg.MaterializeResult(
            metadata={
                "mlflow_run_id": run.info.run_id,
                "model_version": model_version,
                "artifact_id": heads_artifact_id(model_version),
                "registered_model": REGISTERED_MODEL,
                "input_data_versions": input_versions,
                "n_train": len(train), "n_val": len(val),
                "val_mrr_mean": spread["mean"], "val_mrr_std": spread["std"], "seeds": len(results),
                "best_seed": best_seed, "best_epoch": int(best.best_epoch),
                "temperature": float(heads.temperature),
                "checkpoint": dg.MetadataValue.path(lake_path),
                "training_curves": dg.MetadataValue.md(png_markdown(curves, "training and validation curves")),
            },
            data_version=dg.DataVersion(f"{heads_artifact_id(model_version)}-{run.info.run_id[:12]}"),
        )

    return [alignment_model]


def _log_heads_artifacts(mlflow_api, heads, training_set: pl.DataFrame, run_id: str, image_id: str, text_id: str,
                         input_versions: dict) -> dict[str, str]:
    """The checkpoint and its training set as artifacts of the run; returns the checkpoint's header metadata."""
    import tempfile
    from pathlib import Path

    from aion_assets.search.heads import save_heads

    metadata = {"mlflow_run_id": run_id, "image_encoder": image_id, "text_encoder": text_id,
                "input_data_versions": json.dumps(input_versions)}
    with tempfile.TemporaryDirectory() as scratch:
        save_heads(heads, Path(scratch) / "heads.safetensors", extra_metadata=metadata)
        training_set.write_parquet(Path(scratch) / "training_set.parquet")
        mlflow_api.log_artifact(str(Path(scratch) / "heads.safetensors"), artifact_path="heads")
        mlflow_api.log_artifact(str(Path(scratch) / "training_set.parquet"), artifact_path="heads")
    return metadata


def build_index_assets() -> list[dg.AssetsDefinition]:
    model_version = models_code_version()

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
        """The newest heads version's image head applied to every cutout's base embedding: vectors in the shared
        text-image space, in that version's folder (older versions' vectors stay where they are)."""
        store = lake.get()
        version = newest_trained_version(store)
        base = store.read_array(*image_base_embeddings_path(image_encoder.artifact_id, context.partition_key))
        vectors = embed_images(load_heads_from_lake(store, version), base)
        path = store.write_array(vectors, *search_embeddings_path(version, context.partition_key))
        return dg.MaterializeResult(
            metadata={"model_version": version, "vectors": len(vectors), "dim": int(vectors.shape[1]),
                      "path": dg.MetadataValue.path(path)},
            data_version=dg.DataVersion(f"{heads_artifact_id(version)}-{array_fingerprint(vectors)}"),
        )

    def _build_and_save(store, config: IndexConfig, vectors: np.ndarray, ids: pl.DataFrame,
                        parts: tuple[str, ...]) -> dict:
        started = time.perf_counter()
        index = build_index(vectors, ids.select("release", "object_id"), kind=config.kind,
                            exact_threshold=config.exact_threshold)
        seconds = time.perf_counter() - started
        recall = index_recall_at_k(index, vectors, config.recall_sample, k=min(100, len(vectors)))
        nbytes = save_index_to_lake(store, index, parts)
        return {"vectors": int(index.ntotal), "dim": int(vectors.shape[1]), "index_type": index.kind,
                "build_seconds": round(seconds, 3), "bytes": nbytes, "recall_at_100": round(float(recall), 4),
                "path": "/".join(parts)}

    # Rebuilt once a day when shards changed beneath them: at survey scale, once per shard would be thousands.
    daily_rebuild = dg.AutomationCondition.on_cron("0 7 * * *")

    @dg.asset(group_name="index", deps=["search_embeddings"], code_version=model_version, kinds={"faiss"},
              automation_condition=daily_rebuild)
    def search_index(config: IndexConfig, lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """FAISS inner-product index over the newest heads version's search embeddings, with its id map back to
        (release, object_id); once it is written, that version becomes the served one (`latest.json`)."""
        store = lake.get()
        version = newest_trained_version(store)
        try:
            ids, vectors = gather_vectors(store, cutout_rows(warehouse), lambda key: search_embeddings_path(version, key))
        except FileNotFoundError as error:
            raise dg.Failure(f"search embeddings of model version {version} are missing ({error}): materialize "
                             "search_embeddings for every partition first") from error
        metadata = _build_and_save(store, config, vectors, ids, search_index_dir(version))
        served = write_latest_pointer(store, version, heads_metadata_from_lake(store, version)["mlflow_run_id"])
        return dg.MaterializeResult(
            metadata={**metadata, "model_version": version, "served_since": served.written_at},
            data_version=dg.DataVersion(f"{heads_artifact_id(version)}-{array_fingerprint(vectors)}"))

    @dg.asset(group_name="index", deps=["image_base_embeddings"],
              code_version=f"{CODE_REVISION}-{image_encoder_version()}", kinds={"faiss"},
              automation_condition=daily_rebuild)
    def image_similarity_index(config: IndexConfig, lake: LakeResource, warehouse: WarehouseResource,
                               image_encoder: ImageEncoderResource) -> dg.MaterializeResult:
        """The baseline: FAISS index over the frozen image model's (normalised) base embeddings."""
        store = lake.get()
        image_id = image_encoder.artifact_id
        ids, vectors = gather_vectors(store, cutout_rows(warehouse), lambda key: image_base_embeddings_path(image_id, key))
        metadata = _build_and_save(store, config, l2_normalise(vectors), ids, image_similarity_index_dir(image_id))
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(array_fingerprint(vectors)))

    return [search_embeddings, search_index, image_similarity_index]
