"""The zoo group: Galaxy Zoo supervised pretraining as software-defined assets (Walmsley et al. 2024).

zoo_dataset (the fixed split) -> zoo_models (size x fraction, seeds inside) -> zoo_scaling (power laws);
zoo_dataset -> zoo_pretrained_encoder (EfficientNet-Lite0 finetuned, a registered encoder) -> zoo_transfer.
Thin wiring over the pure modules beside it. Every run is one MLflow run; every checkpoint has its own lake path.
"""


import json
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from aion_assets.platform.k8s import GPU_OP_TAGS, GPU_POOL
from aion_assets.platform.layout import (
    ZOO_DATASET,
    ZOO_ENCODER_DIR,
    array_fingerprint,
    versions_holding,
    zoo_encoder_card_path,
    zoo_encoder_trained_on_path,
    zoo_encoder_weights_path,
    zoo_run_checkpoint_path,
)
from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.zoo.models import FRACTIONS, SIZES, GridPoint
from aion_assets.zoo.resources import (
    ZooDatasetConfig,
    ZooEncoderConfig,
    ZooModelsConfig,
    ZooScalingConfig,
    ZooTransferConfig,
)

GROUP = "zoo"
EXPERIMENT = "aion-zoo"
REGISTERED_ENCODER = "aion-zoo-encoder"
CODE_VERSION = "1"

zoo_grid = dg.MultiPartitionsDefinition({
    "size": dg.StaticPartitionsDefinition(list(SIZES)),
    "fraction": dg.StaticPartitionsDefinition(list(FRACTIONS)),
})


def grid_point(keys_by_dimension: Mapping[str, str]) -> GridPoint:
    """A zoo_models partition (its keys by dimension) as the study's grid point."""
    return GridPoint(size=keys_by_dimension["size"], fraction_key=keys_by_dimension["fraction"])


def runs_path(point: GridPoint) -> tuple[str, ...]:
    """One partition's results (one row per seed): written whole, so a re-run replaces them."""
    return ("zoo", "runs", f"{point.size}__{point.fraction_key}.parquet")


def _read_dataset(store) -> pl.DataFrame:
    if not store.exists(*ZOO_DATASET):
        raise dg.Failure("no zoo dataset yet: materialize zoo_dataset first")
    return store.read_parquet(*ZOO_DATASET)


@dg.asset(group_name=GROUP, deps=["raw_cutouts"], code_version=CODE_VERSION, kinds={"polars", "duckdb"})
def zoo_dataset(config: ZooDatasetConfig, lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """gz1-sdss objects with their Galaxy Zoo 1 class (the two spiral senses merged) and one seeded split,
    stratified by class and made by image sha256, fixed across every experiment. The test split is held out
    of every training in the project (the search heads' too)."""
    from aion_assets.zoo.dataset import build_dataset, split_counts

    wh = warehouse.get()
    test_fraction = 1.0 - config.train_fraction - config.validation_fraction
    try:
        dataset = build_dataset(wh.query("SELECT release, object_id, sha256, shard, row FROM cutouts"),
                                wh.query("SELECT release, object_id, name, value FROM labels"),
                                seed=config.split_seed,
                                fractions=(config.train_fraction, config.validation_fraction, test_fraction))
    except ValueError as error:
        raise dg.Failure(str(error)) from error
    lake.get().write_parquet(dataset, *ZOO_DATASET)
    wh.replace_tables({"zoo_dataset": dataset})
    return dg.MaterializeResult(
        metadata={"objects": dataset.height, "images": dataset["sha256"].n_unique(),
                  "per_class_and_split": dg.MetadataValue.md(markdown_table(split_counts(dataset)))},
        data_version=dg.DataVersion(array_fingerprint(dataset.select("object_id", "split").hash_rows().to_numpy())),
    )


@dg.asset_check(asset=zoo_dataset, blocking=True, description="No image (sha256) is in two splits: a test image "
                "under another object id would be a training image.")
def zoo_splits_disjoint_by_image(lake: LakeResource) -> dg.AssetCheckResult:
    dataset = _read_dataset(lake.get())
    shared = dataset.group_by("sha256").agg(pl.col("split").n_unique().alias("splits")).filter(pl.col("splits") > 1)
    return dg.AssetCheckResult(passed=shared.is_empty(), metadata={"images_in_two_splits": shared.height})


def _mlflow_run(mlflow: MlflowResource, run_name: str):
    import mlflow as mlflow_api

    return mlflow_api.start_run(experiment_id=mlflow.experiment(EXPERIMENT), run_name=run_name)


@dg.asset(group_name=GROUP, deps=[zoo_dataset], partitions_def=zoo_grid, pool=GPU_POOL,
          op_tags=GPU_OP_TAGS, code_version=CODE_VERSION,
          kinds={"pytorch", "mlflow"})
def zoo_models(context: dg.AssetExecutionContext, config: ZooModelsConfig, lake: LakeResource,
               mlflow: MlflowResource) -> dg.MaterializeResult:
    """A CNN of one size trained on one fraction of the train split, once per seed, early-stopped on the
    validation loss; test loss and error rate of the held-out test split. One MLflow run and one checkpoint per
    seed; the partition's rows feed zoo_scaling."""
    import mlflow as mlflow_api
    import torch

    from aion_assets.platform.devices import resolve_device
    from aion_assets.zoo.dataset import CLASSES, training_subset
    from aion_assets.zoo.models import build_model, count_parameters
    from aion_assets.zoo.objectives import objective_for, scores
    from aion_assets.zoo.pixels import load_pixels
    from aion_assets.zoo.training import TrainConfig, predict_logits, train_classifier

    point = grid_point(context.partition_key.keys_by_dimension)
    store, device = lake.get(), resolve_device(config.device)
    dataset = _read_dataset(store)
    objective = objective_for(dataset)
    # Positions in the train split, so every seed's subset indexes one array read and resized once.
    dataset = dataset.with_columns(pl.int_range(pl.len()).over("split").alias("_split_row"))
    held = {split: dataset.filter(pl.col("split") == split) for split in ("train", "validation", "test")}
    pixels = {split: load_pixels(store, rows, config.image_px) for split, rows in held.items()}
    train_size = held["train"].height
    targets = {split: objective.targets(rows) for split, rows in held.items()}
    rows = []
    for seed in config.seeds:
        subset = training_subset(dataset, float(point.fraction), seed)
        train_pixels = pixels["train"][torch.from_numpy(subset["_split_row"].to_numpy())]
        model = build_model(point, len(CLASSES), config.base_width)
        train_config = TrainConfig(max_epochs=config.max_epochs, patience=config.patience, batch_size=config.batch_size,
                                   learning_rate=config.learning_rate, seed=seed, device=str(device),
                                   min_round_steps=config.min_round_steps)
        with _mlflow_run(mlflow, f"zoo-{point.size}-{point.fraction_key}-seed{seed}") as run:
            mlflow_api.log_params({**config.model_dump(exclude={"seeds"}), "size": point.size, "seed": seed,
                                   "fraction": str(point.fraction), "n_train": subset.height,
                                   "parameters": count_parameters(model), "device_used": str(device),
                                   "objective": objective.name, "dagster_run_id": context.run.run_id})
            result = train_classifier(model, train_pixels, objective.targets(subset),
                                      pixels["validation"], targets["validation"], train_config,
                                      on_epoch=lambda r: mlflow_api.log_metrics(
                                          {k: v for k, v in r.items() if k != "epoch"}, step=r["epoch"]),
                                      loss_fn=objective.loss_fn)
            test = scores(objective, predict_logits(result.model, pixels["test"], device=str(device)), held["test"])
            mlflow_api.log_metrics({"test_loss": test["loss"], "test_error": test["error"],
                                    "best_epoch": result.best_epoch, "images_per_s": result.images_per_s})
            checkpoint = _save_state(store, result.model, zoo_run_checkpoint_path(point.size, point.fraction_key,
                                                                                  seed))
        rows.append({"model": point.size, "params": count_parameters(model), "fraction": point.fraction_key,
                     "n_train": subset.height, "seed": seed, "test_loss": test["loss"], "test_error": test["error"],
                     "validation_loss": result.best_validation_loss, "best_epoch": result.best_epoch,
                     "epochs_run": result.epochs_run, "train_seconds": result.seconds,
                     "images_per_s": result.images_per_s, "image_px": config.image_px,
                     "objective": objective.name, "mlflow_run_id": run.info.run_id, "checkpoint": checkpoint})
        context.log.info(f"{point.size} on {subset.height} of {train_size}, seed {seed}: test loss "
                         f"{test['loss']:.4f}, error {test['error']:.3f} ({result.epochs_run} epochs, "
                         f"{result.images_per_s:.0f} images/s)")
    frame = pl.DataFrame(rows)
    store.write_parquet(frame, *runs_path(point))
    return dg.MaterializeResult(metadata={
        "size": point.size, "fraction": str(point.fraction), "n_train": int(frame["n_train"][0]),
        "params": int(frame["params"][0]), "device": str(device),
        "test_loss_mean": float(frame["test_loss"].mean()), "test_error_mean": float(frame["test_error"].mean()),
        "runs": dg.MetadataValue.md(markdown_table(frame.select("seed", "n_train", "test_loss", "test_error",
                                                                "best_epoch", "images_per_s", "mlflow_run_id"))),
    })


def _save_state(store, model, parts: tuple[str, ...]) -> str:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return store.write_bytes(buffer.getvalue(), *parts)


@dg.asset(group_name=GROUP, deps=[zoo_models], code_version=CODE_VERSION, pool="duckdb_writer",
          kinds={"scipy", "duckdb"})
def zoo_scaling(context: dg.AssetExecutionContext, config: ZooScalingConfig, lake: LakeResource,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Test loss = a * N^(-alpha) + c fitted per model size over every materialized zoo_models partition, with a
    bootstrap interval on alpha (resampling seeds within each N); the table `zoo_scaling` holds the points and
    their size's fit, and `zoo_parameters` says whether extra parameters help at the largest N."""
    from aion_assets.zoo.plots import scaling_png
    from aion_assets.zoo.scaling import fit_scaling_table, parameters_help

    store = lake.get()
    files = list(store.iter_files("zoo/runs/*.parquet"))
    if not files:
        raise dg.Failure("no zoo_models partition is materialized yet")
    points = pl.concat([store.read_parquet(f) for f in files], how="diagonal_relaxed")
    table = fit_scaling_table(points.select("model", "params", "n_train", "seed", "test_loss", "test_error"),
                              n_bootstrap=config.n_bootstrap, seed=config.seed)
    per_size = parameters_help(points.select("model", "params", "n_train", "seed", "test_loss", "test_error"))
    per_class = _per_class_help(store, points)
    warehouse.get().replace_tables({"zoo_scaling": table, "zoo_parameters": per_size})
    fits = table.unique(subset=["model"], maintain_order=True).select("model", "params", "alpha", "alpha_lo",
                                                                       "alpha_hi", "a", "c")
    context.log.info("\n" + markdown_table(fits))
    return dg.MaterializeResult(metadata={
        "points": table.height, "partitions": len(files),
        "fits": dg.MetadataValue.md(markdown_table(fits)),
        "parameters_help": dg.MetadataValue.md(markdown_table(per_size)),
        "per_class_error_at_largest_n": dg.MetadataValue.md(markdown_table(per_class)) if per_class.height else "-",
        "plot": dg.MetadataValue.md(png_markdown(scaling_png(table), "test loss against training images")),
    })


def _per_class_help(store, points: pl.DataFrame) -> pl.DataFrame:
    """Per class ("task"), each size's test error at the largest N, from the checkpoints: where do parameters
    help? Empty when the dataset is gone."""
    if not store.exists(*ZOO_DATASET) or points.is_empty():
        return pl.DataFrame()
    from aion_assets.zoo.evaluation import per_class_errors

    largest = points.filter(pl.col("n_train") == pl.col("n_train").max().over("model"))
    return per_class_errors(store, _read_dataset(store), largest)


def _encoder_versions(store) -> list[int]:
    return versions_holding(store, ZOO_ENCODER_DIR, "backbone.pt")


@dg.asset(group_name=GROUP, deps=[zoo_dataset], pool=GPU_POOL,
          op_tags=GPU_OP_TAGS, code_version=CODE_VERSION, kinds={"pytorch", "mlflow"})
def zoo_pretrained_encoder(context: dg.AssetExecutionContext, config: ZooEncoderConfig, lake: LakeResource,
                           warehouse: WarehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """EfficientNet-Lite0 (ImageNet) finetuned end to end on the gz1-sdss train split, early-stopped on the
    validation loss: a new version of the registered encoder `aion-zoo-encoder`, selectable for the search as
    AION_IMAGE_ENCODER=zoo-lite0-v<N>. Its lake folder holds the backbone, a card and the objects it trained on."""
    import mlflow as mlflow_api

    from aion_assets.encoders.finetuned import zoo_encoder_spec
    from aion_assets.platform.devices import resolve_device
    from aion_assets.platform.tracking import register_version
    from aion_assets.zoo.backbone import Lite0Network, save_backbone
    from aion_assets.zoo.dataset import CLASSES, training_subset
    from aion_assets.zoo.objectives import objective_for, scores
    from aion_assets.zoo.pixels import load_pixels
    from aion_assets.zoo.training import TrainConfig, predict_logits, train_classifier

    store, device = lake.get(), resolve_device(config.device)
    dataset = _read_dataset(store)
    objective = objective_for(dataset)
    train = training_subset(dataset, config.train_fraction, config.seed)
    validation, test = (dataset.filter(pl.col("split") == s) for s in ("validation", "test"))
    pixels = {name: load_pixels(store, rows, config.image_px) for name, rows in
              (("train", train), ("validation", validation), ("test", test))}
    targets = {name: objective.targets(rows) for name, rows in
               (("train", train), ("validation", validation), ("test", test))}
    network = Lite0Network(len(CLASSES), config.image_px)
    train_config = TrainConfig(max_epochs=config.max_epochs, patience=config.patience, batch_size=config.batch_size,
                               learning_rate=config.learning_rate, seed=config.seed, device=str(device))
    with _mlflow_run(mlflow, f"zoo-encoder-{context.run.run_id[:8]}") as run:
        mlflow_api.log_params({**config.model_dump(), "n_train": train.height, "n_validation": validation.height,
                               "device_used": str(device), "objective": objective.name,
                               "dagster_run_id": context.run.run_id})

        def log_epoch(row: dict) -> None:
            mlflow_api.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
            context.log.info(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, validation loss "
                             f"{row['validation_loss']:.4f}")

        result = train_classifier(network, pixels["train"], targets["train"], pixels["validation"],
                                  targets["validation"], train_config, on_epoch=log_epoch, loss_fn=objective.loss_fn)
        test_scores = scores(objective, predict_logits(result.model, pixels["test"], 64, str(device)), test)
        mlflow_api.log_metrics({"test_loss": test_scores["loss"], "test_error": test_scores["error"],
                                "images_per_s": result.images_per_s})
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "backbone.pt"
            save_backbone(result.model.cpu(), local)
            mlflow_api.log_artifact(str(local), artifact_path="encoder")
            model_version = register_version(
                REGISTERED_ENCODER, "EfficientNet-Lite0 after Galaxy Zoo 1 supervised pretraining (zoo group)",
                run, "encoder", {"image_px": str(config.image_px), "dagster_run_id": context.run.run_id})
            backbone_bytes = local.read_bytes()
    trained_on = pl.concat([train, validation]).select("release", "object_id", "sha256", "split")
    card = {"version": model_version, "image_size": config.image_px, "mlflow_run_id": run.info.run_id,
            "classes": list(CLASSES), "test_loss": test_scores["loss"], "test_error": test_scores["error"],
            "written_at": datetime.now(timezone.utc).isoformat()}
    # Card and training set first, the weights last: a backbone in the lake always has its card beside it.
    store.write_bytes(json.dumps(card).encode(), *zoo_encoder_card_path(model_version))
    store.write_parquet(trained_on, *zoo_encoder_trained_on_path(model_version))
    path = store.write_bytes(backbone_bytes, *zoo_encoder_weights_path(model_version))
    spec = zoo_encoder_spec(model_version)
    return dg.MaterializeResult(metadata={
        "model_version": model_version, "encoder_spec": spec, "use_in_search": f"AION_IMAGE_ENCODER={spec}",
        "mlflow_run_id": run.info.run_id, "device": str(device), "image_px": config.image_px,
        "n_train": train.height, "n_validation": validation.height, "n_test": test.height,
        "test_loss": test_scores["loss"], "test_error": test_scores["error"], "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 1),
        "images_per_s": round(result.images_per_s, 1), "path": dg.MetadataValue.path(path),
    })


@dg.asset(group_name=GROUP, deps=[zoo_pretrained_encoder, "raw_cutouts"], pool=GPU_POOL,
          op_tags=GPU_OP_TAGS, code_version=CODE_VERSION,
          kinds={"pytorch", "scikitlearn", "duckdb"})
def zoo_transfer(context: dg.AssetExecutionContext, config: ZooTransferConfig, lake: LakeResource,
                 warehouse: WarehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Downstream tasks on other surveys for the ImageNet-only and the galaxy-pretrained EfficientNet-Lite0, each
    by linear probe and by end-to-end finetuning, over repeated stratified folds shared by every encoder and
    method. `zoo_transfer`: the mean error per (task, encoder, method) with a corrected resampled-t interval;
    `zoo_transfer_reduction`: the galaxy-pretrained encoder's relative error reduction per task and on average."""
    from aion_assets.platform.devices import resolve_device
    from aion_assets.zoo.evaluation import run_transfer, tasks_from_config
    from aion_assets.zoo.plots import transfer_png

    store, wh = lake.get(), warehouse.get()
    versions = _encoder_versions(store)
    if not versions:
        raise dg.Failure("no galaxy-pretrained encoder yet: materialize zoo_pretrained_encoder first")
    version = config.encoder_version or versions[-1]
    if version not in versions:
        raise dg.Failure(f"zoo_pretrained_encoder v{version} is not in the lake (held: {versions})")
    try:
        tasks = tasks_from_config(config.tasks)
    except ValueError as error:
        raise dg.Failure(str(error)) from error
    started = time.perf_counter()
    outcome = run_transfer(store, wh.query("SELECT release, object_id, sha256, shard, row FROM cutouts"),
                           wh.query("SELECT release, object_id, name, value FROM labels"), version, tasks, config,
                           str(resolve_device(config.device)), log=context.log.info)
    seconds = time.perf_counter() - started
    wh.replace_tables({"zoo_transfer": outcome.summary, "zoo_transfer_folds": outcome.folds,
                       "zoo_transfer_reduction": outcome.reduction})
    _log_transfer(mlflow, outcome, version, context.run.run_id)
    return dg.MaterializeResult(metadata={
        "encoder_version": version, "tasks": len(tasks), "seconds": round(seconds, 1),
        "skipped_tasks": ", ".join(outcome.skipped) or "none",
        "errors": dg.MetadataValue.md(markdown_table(outcome.summary, max_rows=80)),
        "reduction": dg.MetadataValue.md(markdown_table(outcome.reduction, max_rows=40)),
        "plot": dg.MetadataValue.md(png_markdown(transfer_png(outcome.summary), "error per task, encoder, method")),
    })


def _log_transfer(mlflow: MlflowResource, outcome, version: int, dagster_run_id: str) -> None:
    import mlflow as mlflow_api

    with _mlflow_run(mlflow, f"zoo-transfer-v{version}"):
        mlflow_api.log_params({"encoder_version": version, "dagster_run_id": dagster_run_id})
        mlflow_api.log_metrics({f"{r['task']}/{r['encoder']}/{r['method']}/{r['metric']}": r["value"]
                                for r in outcome.summary.iter_rows(named=True)})
        mlflow_api.log_metrics({f"reduction/{r['method']}/{r['task']}": r["reduction"]
                                for r in outcome.reduction.iter_rows(named=True) if r["reduction"] is not None
                                and np.isfinite(r["reduction"])})
