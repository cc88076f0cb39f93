"""The stellar group: catalogue -> emulator (MLflow, a registered version) -> posteriors -> evaluation.

Thin wiring over the pure modules beside it (catalog, emulator, inference, evaluation, scoring). Every table
is replaced in one transaction, and a version's lake files are written before anything names them, so a failed
run leaves the previous results as they were.
"""


import hashlib
import time

import dagster as dg
import numpy as np
import polars as pl

from aion_assets.platform.k8s import GPU_OP_TAGS, GPU_POOL
from aion_assets.platform.layout import stellar_samples_path, version_id
from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.stellar.resources import (
    StellarCatalogConfig,
    StellarDataResource,
    StellarEmulatorConfig,
    StellarPosteriorsConfig,
)

CATALOG_CODE_VERSION = "1"
EMULATOR_CODE_VERSION = "1"
POSTERIORS_CODE_VERSION = "1"
EVAL_CODE_VERSION = "1"
GROUP = "stellar"


def _catalog_data_version(folder, config: StellarCatalogConfig) -> str:
    digest = hashlib.sha256(repr(sorted(config.model_dump().items())).encode())
    for path in sorted(folder.glob("*.csv")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dg.asset(group_name=GROUP, code_version=CATALOG_CODE_VERSION, kinds={"polars", "duckdb"})
def stellar_catalog(context: dg.AssetExecutionContext, config: StellarCatalogConfig,
                    stellar_data: StellarDataResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The three stellar tables as one long table (star_id, source, name, value, error, split, z), names unified
    across catalogues, with the per-name median and MAD of the train split (`stellar_standardisation`); every
    value that could not be kept is a row of `stellar_quarantine` with its reason."""
    from aion_assets.stellar.catalog import build_catalog

    folder = stellar_data.path()
    test_fraction = 1.0 - config.train_fraction - config.validation_fraction
    if test_fraction <= 0:
        raise dg.Failure("train_fraction + validation_fraction must leave a test split")
    catalog = build_catalog(folder, seed=config.split_seed,
                            fractions=(config.train_fraction, config.validation_fraction, test_fraction))
    warehouse.get().replace_tables({"stellar_catalog": catalog.measurements,
                                    "stellar_standardisation": catalog.standardisation,
                                    "stellar_quarantine": catalog.quarantine})
    per_source = catalog.measurements.group_by("source").agg(
        pl.col("star_id").n_unique().alias("stars"), pl.len().alias("values")).sort("source")
    splits = catalog.measurements.group_by("split").agg(pl.col("star_id").n_unique().alias("stars")).sort("split")
    reasons = catalog.quarantine.group_by("source", "name").agg(pl.len().alias("rows"),
                                                                pl.col("reason").first()).sort("source", "name")
    context.log.info(f"{catalog.measurements.height} values of {catalog.measurements['star_id'].n_unique()} stars; "
                     f"{catalog.quarantine.height} quarantined")
    return dg.MaterializeResult(
        metadata={
            "values": catalog.measurements.height,
            "stars": catalog.measurements["star_id"].n_unique(),
            "quarantined": catalog.quarantine.height,
            "per_source": dg.MetadataValue.md(markdown_table(per_source)),
            "stars_per_split": dg.MetadataValue.md(markdown_table(splits)),
            "quarantine_reasons": dg.MetadataValue.md(markdown_table(reasons, max_rows=40)),
        },
        data_version=dg.DataVersion(_catalog_data_version(folder, config)),
    )


def _emulator_config(config: StellarEmulatorConfig):
    import dataclasses

    from aion_assets.stellar.catalog import NAMES
    from aion_assets.stellar.emulator import CPU_DEFAULT, REFERENCE

    preset = CPU_DEFAULT if config.preset == "cpu" else REFERENCE
    overrides = {field: getattr(config, field) for field in ("embedding_dim", "num_layers", "head_layers",
                                                              "head_width", "diffusion_steps")
                 if getattr(config, field) is not None}
    return dataclasses.replace(preset.with_names(NAMES), **overrides)


@dg.asset(group_name=GROUP, deps=[stellar_catalog], code_version=EMULATOR_CODE_VERSION, pool=GPU_POOL,
          op_tags=GPU_OP_TAGS,
          kinds={"pytorch", "mlflow"})
def stellar_emulator(context: dg.AssetExecutionContext, config: StellarEmulatorConfig, lake: LakeResource,
                     warehouse: WarehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """ONE Transformer over (name, value) tokens with a diffusion head, trained jointly on all three catalogues
    (each example: a random subset of a star's known values predicting another of them). One MLflow run per
    materialization (params, curves, checkpoint), a new version of the registered model
    `aion-stellar-emulator`, and that version's folder in the lake."""
    import mlflow as mlflow_api

    from aion_assets.platform.devices import resolve_device
    from aion_assets.stellar.artifacts import EXPERIMENT, checkpoint_bytes, save_to_lake, write_latest_pointer
    from aion_assets.stellar.emulator import train_emulator
    from aion_assets.stellar.inference import source_balanced_weights, token_table
    from aion_assets.stellar.plots import training_curves_png

    store, wh = lake.get(), warehouse.get()
    measurements = wh.query("SELECT star_id, source, name, z, split FROM stellar_catalog")
    standardisation = wh.query("SELECT * FROM stellar_standardisation")
    model_config = _emulator_config(config)
    train, train_units = token_table(measurements.filter(pl.col("split") == "train"), model_config.names)
    validation, _ = token_table(measurements.filter(pl.col("split") == "validation"), model_config.names)
    device = resolve_device(config.device)
    experiment_id = mlflow.experiment(EXPERIMENT)
    with mlflow_api.start_run(experiment_id=experiment_id, run_name=f"stellar-{context.run.run_id[:8]}") as run:
        mlflow_api.log_params({**config.model_dump(), **{f"model_{k}": v for k, v in model_config.to_dict().items()
                                                          if k != "names"},
                               "n_names": len(model_config.names), "device_used": str(device),
                               "n_train": train.values.shape[0], "n_validation": validation.values.shape[0],
                               "dagster_run_id": context.run.run_id})

        def log_eval(step: int, train_loss: float, validation_loss: float) -> None:
            mlflow_api.log_metrics({"train_loss": train_loss, "validation_loss": validation_loss}, step=step)
            context.log.info(f"step {step}/{config.steps}: train loss {train_loss:.4f}, validation loss "
                             f"{validation_loss:.4f}")

        started = time.perf_counter()
        model, curves = train_emulator(train, validation, model_config, steps=config.steps,
                                       batch_size=config.batch_size, lr=config.learning_rate, seed=config.seed,
                                       device=str(device), on_eval=log_eval, eval_every=config.eval_every,
                                       noise_draws=config.noise_draws,
                                       star_weights=source_balanced_weights(train_units, config.source_balance))
        seconds = time.perf_counter() - started
        mlflow_api.log_metrics({"train_seconds": seconds, "steps_per_s": config.steps / seconds})
        curves_png = training_curves_png(curves)
        checkpoint_file = checkpoint_bytes(model.cpu())
        model_version = _log_and_register(mlflow_api, run, checkpoint_file, standardisation, curves_png,
                                          n_train=train.values.shape[0])
    context.log.info(f"stellar emulator v{model_version}: {config.steps} steps in {seconds:.0f} s on {device}, "
                     f"validation loss {curves[-1]['validation_loss']:.4f}")
    checkpoint = save_to_lake(store, model_version, checkpoint_file, standardisation)
    write_latest_pointer(store, model_version, run.info.run_id)
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run.info.run_id, "model_version": model_version,
            "artifact_id": version_id(model_version), "device": str(device),
            "n_train": train.values.shape[0], "n_validation": validation.values.shape[0],
            "steps": config.steps, "train_seconds": round(seconds, 1),
            "steps_per_s": round(config.steps / seconds, 2),
            "validation_loss": float(curves[-1]["validation_loss"]),
            "checkpoint": dg.MetadataValue.path(checkpoint),
            "training_curves": dg.MetadataValue.md(png_markdown(curves_png, "training curves")),
        },
        data_version=dg.DataVersion(f"{version_id(model_version)}-{run.info.run_id[:12]}"),
    )


def _log_and_register(mlflow_api, run, checkpoint: bytes, standardisation: pl.DataFrame, curves_png: bytes,
                      n_train: int) -> int:
    """The checkpoint, its standardisation and curves as the run's artifacts; returns the registered version."""
    import tempfile
    from pathlib import Path

    from aion_assets.platform.tracking import log_png, register_version
    from aion_assets.stellar.artifacts import REGISTERED_MODEL

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "emulator.pt").write_bytes(checkpoint)
        standardisation.write_parquet(Path(scratch) / "standardisation.parquet")
        mlflow_api.log_artifacts(scratch, artifact_path="emulator")
    log_png(curves_png, "training_curves.png")
    version = register_version(REGISTERED_MODEL, "AION stellar label emulator", run, "emulator",
                               {"n_train": str(n_train)})
    mlflow_api.set_tag("model_version", str(version))
    return version


def _test_tables(measurements: pl.DataFrame, config: StellarPosteriorsConfig):
    """(task, variant, inputs, table) of every question asked, on seeded subsets of the test stars."""
    from aion_assets.stellar.tasks import ALL_INPUTS, TASKS, subsample, task_table

    for task in TASKS:
        table = subsample(task_table(measurements, task, "test"), config.max_stars, config.seed)
        for variant, inputs in task.variants():
            limit = None if variant == ALL_INPUTS else config.max_stars_left_out
            yield task, variant, inputs, subsample(table, limit, config.seed)


@dg.asset(group_name=GROUP, deps=[stellar_emulator], code_version=POSTERIORS_CODE_VERSION, pool=GPU_POOL,
          op_tags=GPU_OP_TAGS,
          kinds={"pytorch", "duckdb"})
def stellar_posteriors(context: dg.AssetExecutionContext, config: StellarPosteriorsConfig, lake: LakeResource,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Posterior samples of every task's target for its test stars, with all inputs and with each input left
    out once, from the newest emulator version: summaries in `stellar_posteriors` (median, 16/84 and 2.5/97.5
    percentiles, truth), the samples as one lake array per task and variant."""
    from aion_assets.platform.devices import resolve_device
    from aion_assets.stellar.artifacts import load_from_lake, resolve_version
    from aion_assets.stellar.inference import sample_task
    from aion_assets.stellar.scoring import summarise

    store, wh = lake.get(), warehouse.get()
    model_version = resolve_version(store, None)
    device = resolve_device(config.device)
    model, standardisation = load_from_lake(store, model_version, device=str(device))
    measurements = wh.query("SELECT star_id, source, name, value, z, split FROM stellar_catalog")
    frames, started, asked = [], time.perf_counter(), 0
    for task, variant, inputs, table in _test_tables(measurements, config):
        if table.height == 0:
            context.log.warning(f"{task.name}: no test stars have {task.target} and all of its inputs")
            continue
        z_inputs = table.select([f"{name}__z" for name in inputs]).to_numpy()
        z_samples = sample_task(model, inputs, z_inputs, task.target, config.n_samples, config.seed, str(device))
        samples = standardisation.unstandardise(task.target, z_samples).astype(np.float32)
        store.write_array(samples, *stellar_samples_path(model_version, task.name, variant))
        summary = summarise(samples)
        frames.append(pl.DataFrame({
            "model_version": model_version, "star_id": table["star_id"], "source": task.source,
            "task": task.name, "variant": variant, "target": task.target, "inputs": ",".join(inputs),
            "n_inputs": len(inputs), **{k: np.asarray(v, dtype=np.float64) for k, v in summary.items()},
            "truth": table[task.target], "row": np.arange(table.height, dtype=np.int64),
        }))
        asked += table.height
    if not frames:
        raise dg.Failure("no task has test stars: is stellar_catalog empty?")
    seconds = time.perf_counter() - started
    posteriors = pl.concat(frames)
    wh.replace_rows("stellar_posteriors", posteriors, where="model_version = ?", params=[model_version])
    context.log.info(f"{asked} posteriors x {config.n_samples} samples in {seconds:.0f} s on {device}")
    return dg.MaterializeResult(
        metadata={"model_version": model_version, "rows": posteriors.height, "samples_per_star": config.n_samples,
                  "samples_per_s": round(asked * config.n_samples / seconds, 1), "device": str(device)},
        data_version=dg.DataVersion(f"{version_id(model_version)}-{config.n_samples}-{posteriors.height}"),
    )
