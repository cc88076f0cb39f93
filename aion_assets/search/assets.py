"""The search chain as assets: alignment heads (MLflow), search embeddings, FAISS indexes.

Every heads version is its own folder in the lake (``v<registered model version>``): the heads, their training
set, their search embeddings and their index. ``search_index`` names the version it just indexed as the served
one (``models/alignment/latest.json``), so an app can keep serving while the next version trains.

The search index is built per partition: ``search_index_quantizer`` trains an empty index once per heads version,
``search_index_shards`` fills a copy of it with each partition's vectors in that partition's own step, and
``search_index`` merges the shards (cheap next to a rebuild) into the index the app loads. A new shard of cutouts
costs one shard step and a merge, not a rebuild over the whole survey.
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
from aion_assets.platform.k8s import GPU_OP_TAGS, GPU_POOL
from aion_assets.platform.layout import (
    CURRENT_DESCRIPTIONS,
    ZOO_DATASET,
    ShardKey,
    array_fingerprint,
    artefact_model_path,
    artefact_scores_path,
    heads_artifact_id,
    image_base_embeddings_path,
    image_similarity_index_dir,
    search_embeddings_dir,
    search_embeddings_path,
    search_index_dir,
    text_embeddings_dir,
    training_curves_path,
)
from aion_assets.platform.partitions import release_shards, shard_backfill_policy
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.platform.tracking import log_png, register_version
from aion_assets.search.artefacts import ArtefactModel, artefact_labels, fit_artefact_model
from aion_assets.search.artifacts import (
    IndexShardMissing,
    heads_metadata_from_lake,
    load_artefact_model,
    load_heads_from_lake,
    load_index_shard,
    load_shard_ids,
    load_trained_index,
    newest_trained_version,
    read_shard_meta,
    save_artefact_model,
    save_heads_to_lake,
    save_index_shard,
    save_index_to_lake,
    save_trained_index,
    search_index_build_dir,
    shard_partitions,
    trained_index_path,
    write_latest_pointer,
)
from aion_assets.search.heads import HeadsEnsemble
from aion_assets.search.index import (
    SHARDED_KINDS,
    build_index,
    choose_sharded_kind,
    index_from_merged_shards,
    index_recall_at_k,
    train_for_shards,
)
from aion_assets.search.plots import training_curves_png
from aion_assets.search.resources import AlignmentTrainingConfig, IndexConfig
from aion_assets.search.sharded_index import add_shard, merge_local_shards, sample_rows
from aion_assets.search.training import embed_images, seed_summary, text_positives, train_alignment
from aion_assets.search.vectors import gather_vectors, l2_normalise, partitions_in_order
from aion_assets.search.versions import REGISTERED_MODEL

CODE_REVISION = "3"
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


def partition_cutout_rows(warehouse: WarehouseResource, partition_key: str) -> pl.DataFrame:
    """:func:`cutout_rows` of one partition: the same rows in the same order as its stretch of the whole table."""
    key = ShardKey.parse(partition_key)
    return warehouse.get().query(
        "SELECT release, shard, row, object_id, sha256 FROM cutouts WHERE release = ? AND shard = ? ORDER BY row",
        [key.release, key.shard],
    )


def models_code_version() -> str:
    """The models in use are part of every code version here: switching the text or image model (or its
    precision) marks the heads and everything after them as changed, through the lineage."""
    return f"{CODE_REVISION}-{image_encoder_version()}-{text_encoder_version()}"


def _training_pairs(store, warehouse, image_id: str, text_id: str, positives: str):
    """Described objects that have cutouts: their ids (with image sha256), image vectors and text positives
    ([N, V, dt], see training.text_positives)."""
    folder = text_embeddings_dir(text_id)
    text_ids = store.read_parquet(*folder, "ids.parquet")
    texts = {name: store.read_array(*folder, f"{name}.npy") for name in ("description", "summary")}
    if positives in ("chunks", "all"):
        if not store.exists(*folder, "sentences.npy"):
            raise dg.Failure("the text embeddings have no sentence embeddings (written before they existed): "
                             "re-materialize text_embeddings")
        texts["sentences"] = store.read_array(*folder, "sentences.npy")
    located = text_ids.with_row_index("text_row").join(cutout_rows(warehouse), on=["release", "object_id"],
                                                       how="inner")
    located = without_held_out(store, located)
    if located.height < 8:
        raise dg.Failure(f"only {located.height} described objects have cutouts; need at least 8 to train")
    _, images = gather_vectors(store, located, lambda key: image_base_embeddings_path(image_id, key))
    text_rows = located["text_row"].to_numpy()
    try:
        views = text_positives({name: array[text_rows] for name, array in texts.items()}, positives)
    except ValueError as error:
        raise dg.Failure(str(error)) from error
    return located, images, views


def without_held_out(store, located: pl.DataFrame) -> pl.DataFrame:
    """Described objects less the Galaxy Zoo study's test split (by id and by image): those objects are held out
    of every training in the project, so the study's test figures stay test figures."""
    if not store.exists(*ZOO_DATASET):
        return located
    test = store.read_parquet(*ZOO_DATASET).filter(pl.col("split") == "test")
    kept = located.join(test.select("release", "object_id"), on=["release", "object_id"], how="anti")
    return kept.filter(~pl.col("sha256").is_in(test["sha256"].implode()))


def _fit_artefact_model(context, store, located: pl.DataFrame, images: np.ndarray) -> ArtefactModel | None:
    """The artefact score's classifier, fitted on the training objects' base embeddings and the weak labels their
    summaries give; None (logged) when the descriptions name too few artefacts to fit one."""
    summaries = located.join(store.read_parquet(*CURRENT_DESCRIPTIONS).select("release", "object_id", "summary"),
                             on=["release", "object_id"], how="left", maintain_order="left")["summary"]
    try:
        model = fit_artefact_model(images, artefact_labels(summaries.to_list()))
    except ValueError as error:
        context.log.warning(f"no artefact score for this version: {error}")
        return None
    context.log.info(f"artefact score: {model.metrics['n_artefacts']:.0f} of {model.metrics['n']:.0f} described "
                     f"objects are artefacts by their summary; held-out AUC {model.metrics['heldout_auc']:.3f}")
    return model


def build_training_assets() -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="training",
        deps=["text_embeddings", "image_base_embeddings", "description_sample", "zoo_dataset"],
        code_version=models_code_version(),
        pool=GPU_POOL, op_tags=GPU_OP_TAGS,
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
        located, images, texts = _training_pairs(store, warehouse, image_id, text_id, config.text_positives)

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

                result = train_alignment(images[train], texts[train], images[val], texts[val],
                                         config.train_config(seed), on_epoch=log_epoch)
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
            # with `ensemble`, every seed's heads, their cosines averaged (search/resources.py says why not served)
            heads = HeadsEnsemble([r.heads() for r in results]) if config.ensemble else best.heads()
            mlflow_api.set_tag("heads", f"ensemble of {len(results)} seeds" if config.ensemble
                               else f"best seed ({best_seed})")
            checkpoint = _log_heads_artifacts(mlflow_api, heads, training_set, run.info.run_id, image_id, text_id,
                                              input_versions)
            model_version = register_version(
                REGISTERED_MODEL, "AION-Search projection heads", run, "heads",
                {"image_encoder": image_id, "text_encoder": text_id, "n_train": str(len(train))})
            mlflow_api.set_tag("model_version", str(model_version))
            artefacts = _fit_artefact_model(context, store, located, images)
            if artefacts is not None:
                mlflow_api.log_metrics({f"artefacts/{k}": v for k, v in artefacts.metrics.items()})
        # The lake copy last: a version folder exists only for a version MLflow has registered. The artefact
        # model before the checkpoint: search_embeddings of a version with heads finds its artefact model too.
        if artefacts is not None:
            save_artefact_model(store, model_version, artefacts)
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
                "heads": f"ensemble of {len(results)} seeds" if config.ensemble else f"seed {best_seed}",
                "text_positives": config.text_positives,
                "temperature": float(heads.temperature),
                "artefact_model": (dg.MetadataValue.json(artefacts.metrics) if artefacts is not None
                                   else "none: too few artefact descriptions"),
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


class SearchIndexQuantizerConfig(dg.Config):
    """The trained, empty index that every partition's shard is a copy of: "auto" picks exact ("flat") below
    ``exact_threshold`` vectors and IVF-PQ above, trained on at most ``train_sample`` vectors drawn (seeded)
    across the partitions."""

    kind: str = "auto"
    exact_threshold: int = 200_000
    train_sample: int = 200_000
    opq_iterations: int = 20
    seed: int = 0


class SearchIndexMergeConfig(dg.Config):
    """The merge: IVF-PQ search settings are tuned to ``target_recall``@100; recall@100 against exact search is
    reported on ``recall_sample`` of the indexed vectors as queries."""

    recall_sample: int = 200
    target_recall: float = 0.95


# Bump when the way the search index is trained, filled or merged changes: the quantizer retrains (its code
# version changed), every shard is refilled from it and the merge runs again.
INDEX_CODE_REVISION = "1"
AC = dg.AutomationCondition


def quantizer_automation() -> dg.AutomationCondition:
    """Train when missing, when the code version changes, or once new heads (alignment_model) have their search
    embeddings; never because a search_embeddings partition landed: retraining invalidates every shard.

    New heads' search embeddings are requested on the tick alignment_model lands, in runs of their own (a
    partitioned asset and this one cannot share a run, so ``will_be_requested`` never sees them): the request waits
    that tick out, then while any of them is requested or in progress, and trains on the new vectors after."""
    heads_updated = AC.any_deps_match(AC.newly_updated()).allow(dg.AssetSelection.assets("alignment_model"))
    # a failed training is not retried every tick while the index is missing; new heads or code retry it
    missing = (AC.missing() & ~AC.execution_failed()).with_label("missing (last run not failed)")
    retrain = (missing | AC.code_version_changed() | heads_updated).since_last_handled()
    deps_busy = AC.any_deps_match(AC.newly_requested() | AC.in_progress()).with_label(
        "any deps requested or in progress")
    return (retrain & ~heads_updated & ~deps_busy & ~AC.any_deps_missing() & ~AC.in_progress()).with_label(
        "retrain on new heads or code")


def _with_artefact_scores(store, version: int, rows: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """The index's id map (release, object_id), with each row's artefact score when the version has them: the
    service demotes likely artefacts and shows the score."""
    ids = ids.select("release", "object_id")
    if not store.exists(*artefact_model_path(version)):  # its existence is all this needs to know
        return ids
    try:
        _, scores = gather_vectors(store, rows, lambda key: artefact_scores_path(version, key))
    except FileNotFoundError as error:
        raise dg.Failure(f"artefact scores of model version {version} are missing ({error}): re-materialize "
                         "search_embeddings for every partition") from error
    return ids.with_columns(pl.Series("artefact_score", scores.reshape(-1), pl.Float32))


def _embeddings_missing(version: int, partition: str, error: Exception) -> dg.Failure:
    return dg.Failure(f"{partition}: search embeddings of model version {version} are missing ({error}): "
                      "materialize search_embeddings for it first")


def _shards_failure(version: int, missing: list[str], stale: list[str]) -> dg.Failure:
    def named(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} partition(s) have no shard ({named(missing)})")
    if stale:
        problems.append(f"{len(stale)} shard(s) were filled from another trained index or from other cutouts "
                        f"({named(stale)})")
    return dg.Failure(f"cannot merge the search index of model version {version}: {'; '.join(problems)}: "
                      "materialize search_index_shards for them first",
                      metadata={"missing": missing, "stale": stale})


def build_index_assets() -> list[dg.AssetsDefinition]:
    model_version = models_code_version()
    index_version = f"{model_version}-index{INDEX_CODE_REVISION}"

    @dg.asset(
        partitions_def=release_shards,
        backfill_policy=shard_backfill_policy,
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
        text-image space, in that version's folder (older versions' vectors stay where they are), and each
        cutout's artefact score from the version's artefact model."""
        store = lake.get()
        version = newest_trained_version(store)
        heads, artefacts = load_heads_from_lake(store, version), load_artefact_model(store, version)
        written, arrays = [], []
        # a backfill run covers up to shard_backfill_policy's partitions; a run of its own, one
        for partition in context.partition_keys:
            base = store.read_array(*image_base_embeddings_path(image_encoder.artifact_id, partition))
            arrays.append(embed_images(heads, base))
            if artefacts is not None:  # first: the index merge takes a partition's vectors to mean its scores too
                store.write_array(artefacts.score(base), *artefact_scores_path(version, partition))
            written.append(store.write_array(arrays[-1], *search_embeddings_path(version, partition)))
        path = written[0] if len(written) == 1 else store.url(*search_embeddings_dir(version))
        return dg.MaterializeResult(
            metadata={"model_version": version, "vectors": sum(len(a) for a in arrays),
                      "dim": int(arrays[0].shape[1]), "partitions": len(arrays), "path": dg.MetadataValue.path(path)},
            data_version=dg.DataVersion(f"{heads_artifact_id(version)}-{array_fingerprint(*arrays)}"),
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

    @dg.asset(group_name="index", deps=["alignment_model", "search_embeddings"], code_version=index_version,
              kinds={"faiss"}, automation_condition=quantizer_automation())
    def search_index_quantizer(context: dg.AssetExecutionContext, config: SearchIndexQuantizerConfig,
                               lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """The newest heads version's trained, empty search index, which every partition's shard is a copy of:
        exact (flat) below the exact threshold, else IVF-PQ (coarse lists, OPQ rotation, product quantizer)
        trained once on a seeded sample drawn across the partitions. HNSW is not built per partition: a graph
        over all vectors cannot be assembled from per-partition pieces."""
        store = lake.get()
        version = newest_trained_version(store)
        rows = cutout_rows(warehouse)
        keys = partitions_in_order(rows)
        # one listing of the version's folder, not one request per partition (thousands at survey scale)
        present = {(relative.split("/")[-2], relative.split("/")[-1].removesuffix(".npy"))
                   for relative in store.iter_files("/".join(search_embeddings_dir(version)) + "/*/*.npy")}
        held = [key for key in map(ShardKey.parse, keys) if (key.release, key.shard) in present]
        if len(held) < len(keys):
            context.log.warning(f"{len(keys) - len(held)} of {len(keys)} partitions have no search embeddings of "
                                f"model version {version} yet: the index is shaped and trained without them")
        held_rows = rows.join(pl.DataFrame({"release": [k.release for k in held], "shard": [k.shard for k in held]},
                                           schema={"release": pl.String, "shard": pl.String}),
                              on=["release", "shard"], how="semi", maintain_order="left")
        n_held = held_rows.height
        if not n_held:
            raise dg.Failure(f"no search embeddings of model version {version} for any cutout yet: materialize "
                             "search_embeddings first")
        kind = choose_sharded_kind(n_held, config.exact_threshold) if config.kind == "auto" else config.kind
        if kind not in SHARDED_KINDS:
            raise dg.Failure(f"kind {kind!r} cannot be built per partition: use auto, "
                             f"{' or '.join(SHARDED_KINDS)} (an HNSW graph cannot be merged from shards)")
        started = time.perf_counter()
        # a flat index needs no training: one vector tells its width
        sample_size = config.train_sample if kind == "ivfpq" else 1
        sampled = held_rows[sample_rows(n_held, sample_size, config.seed)]
        _, sample = gather_vectors(store, sampled, lambda key: search_embeddings_path(version, key))
        try:
            trained, params = train_for_shards(sample, kind, n_held, config.opq_iterations, config.seed)
        except ValueError as error:
            raise dg.Failure(f"cannot train a {kind} index for model version {version}: {error}") from error
        seconds = time.perf_counter() - started
        meta = save_trained_index(store, version, trained, {
            "kind": kind, "params": params, "dim": int(trained.d), "vectors_held": n_held,
            "train_vectors": len(sample) if kind == "ivfpq" else 0, "partitions": len(held), "seed": config.seed})
        return dg.MaterializeResult(
            metadata={"model_version": version, "index_type": kind, "vectors_held": n_held,
                      "train_vectors": meta["train_vectors"], "partitions": len(held), "dim": int(trained.d),
                      "params": params, "train_seconds": round(seconds, 3), "fingerprint": meta["fingerprint"],
                      "path": dg.MetadataValue.path(store.url(*trained_index_path(version)))},
            data_version=dg.DataVersion(f"{heads_artifact_id(version)}-{meta['fingerprint']}"),
        )

    @dg.asset(
        partitions_def=release_shards,
        backfill_policy=shard_backfill_policy,
        group_name="index",
        deps=["search_index_quantizer", "search_embeddings"],
        code_version=index_version,
        kinds={"faiss"},
        automation_condition=dg.AutomationCondition.eager(),
        output_required=False,
    )
    def search_index_shards(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
        """One partition's vectors in a copy of the newest heads version's trained index: the shard (local rows
        0..n-1, in the cutouts table's row order) and its id map (release, object_id), for search_index to merge.
        Until the newest version's index is trained this adds nothing (new heads' search embeddings land first;
        their shards are filled when search_index_quantizer has trained, which runs this again)."""
        store = lake.get()
        version = newest_trained_version(store)
        try:
            trained, trained_meta = load_trained_index(store, version)
        except IndexShardMissing as error:
            context.log.warning(f"nothing added: {error} (it runs once model version {version}'s search "
                                "embeddings are in; these shards are filled after it)")
            return
        added, filled = {}, []
        for partition in context.partition_keys:
            rows = partition_cutout_rows(warehouse, partition)
            try:
                ids, vectors = gather_vectors(store, rows, lambda key: search_embeddings_path(version, key))
            except FileNotFoundError as error:
                raise _embeddings_missing(version, partition, error) from error
            vectors = l2_normalise(vectors) if len(vectors) else np.zeros((0, trained.d), dtype=np.float32)
            shard = add_shard(trained, vectors)
            save_index_shard(store, version, partition, shard, ids, {
                "model_version": version, "quantizer": trained_meta["fingerprint"], "kind": trained_meta["kind"]})
            added[partition] = int(shard.ntotal)
            filled.append(vectors)
        yield dg.MaterializeResult(
            metadata={"model_version": version, "index_type": trained_meta["kind"],
                      "vectors": sum(added.values()), "partitions": len(added),
                      "quantizer": trained_meta["fingerprint"],
                      "path": dg.MetadataValue.path(store.url(*search_index_build_dir(version), "shards"))},
            data_version=dg.DataVersion(f"{trained_meta['fingerprint']}-{array_fingerprint(*filled)}"),
        )

    @dg.asset(group_name="index", deps=["search_index_shards"], code_version=index_version, kinds={"faiss"},
              automation_condition=dg.AutomationCondition.eager())
    def search_index(context: dg.AssetExecutionContext, config: SearchIndexMergeConfig, lake: LakeResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
        """FAISS inner-product index over the newest heads version's search embeddings, with its id map back to
        (release, object_id): every partition's shard merged, in the cutouts table's order; once it is written,
        that version becomes the served one (`latest.json`)."""
        store = lake.get()
        version = newest_trained_version(store)
        try:
            trained, trained_meta = load_trained_index(store, version)
        except IndexShardMissing as error:
            raise dg.Failure(str(error)) from error
        rows = cutout_rows(warehouse)
        keys = partitions_in_order(rows)
        if not keys:
            raise dg.Failure("the cutouts table is empty: materialize raw_cutouts first")
        missing, stale = [], []
        for key, part in zip(keys, rows.partition_by(["release", "shard"], maintain_order=True), strict=True):
            meta = read_shard_meta(store, version, key)
            if meta is None:
                missing.append(key)
            elif (meta["quantizer"] != trained_meta["fingerprint"]
                  or not load_shard_ids(store, version, key).equals(part.select("release", "object_id"))):
                stale.append(key)  # filled before a retraining, or before its shard of cutouts was re-ingested
        if missing or stale:
            raise _shards_failure(version, missing, stale)
        # shards of partitions retired since (their cutouts gone from the table) stay in the lake, unmerged
        retired = sorted(set(shard_partitions(store, version)) - set(keys))
        if retired:
            context.log.info(f"skipped {len(retired)} shard(s) of partitions the cutouts table no longer holds: "
                             f"{', '.join(retired[:5])}")
        started = time.perf_counter()
        # In memory: at our sizes the merged IVF lists fit in RAM. At survey scale they go to disk instead
        # (sharded_index.merge_shards, faiss.contrib.ondisk.merge_ondisk; docs/scale.md, `aion bench index`).
        merged = merge_local_shards(trained, (load_index_shard(store, version, key) for key in keys))
        try:
            ids, vectors = gather_vectors(store, rows, lambda key: search_embeddings_path(version, key))
        except FileNotFoundError as error:
            raise dg.Failure(f"search embeddings of model version {version} are missing ({error}): materialize "
                             "search_embeddings for every partition first") from error
        index = index_from_merged_shards(merged, _with_artefact_scores(store, version, rows, ids),
                                         trained_meta["kind"], trained_meta["params"], vectors,
                                         target_recall=config.target_recall)
        seconds = time.perf_counter() - started
        recall = index_recall_at_k(index, vectors, config.recall_sample, k=min(100, len(vectors)))
        parts = search_index_dir(version)
        nbytes = save_index_to_lake(store, index, parts)
        served = write_latest_pointer(store, version, heads_metadata_from_lake(store, version)["mlflow_run_id"])
        return dg.MaterializeResult(
            metadata={"vectors": int(index.ntotal), "dim": int(index.dim), "index_type": index.kind,
                      "build_seconds": round(seconds, 3), "bytes": nbytes, "recall_at_100": round(float(recall), 4),
                      "path": "/".join(parts), "model_version": version, "served_since": served.written_at,
                      "shards": len(keys), "retired_shards_skipped": len(retired),
                      "quantizer": trained_meta["fingerprint"]},
            data_version=dg.DataVersion(
                f"{heads_artifact_id(version)}-{trained_meta['fingerprint'][:8]}-{array_fingerprint(vectors)}"))

    # Rebuilt once a day when shards changed beneath them: at survey scale, once per shard would be thousands.
    daily_rebuild = dg.AutomationCondition.on_cron("0 7 * * *")

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

    return [search_embeddings, search_index_quantizer, search_index_shards, search_index, image_similarity_index]
