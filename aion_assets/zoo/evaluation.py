"""The study's evaluations over lake data: per-class errors of the scaling runs, and the transfer experiment.

No dagster: the assets hand in the lake, the tables and a config object, and get frames back.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import zoo_encoder_trained_on_path, zoo_encoder_weights_path, zoo_run_checkpoint_path
from aion_assets.zoo.transfer import DEFAULT_TASKS, TransferTask, summarise_folds

IMAGENET = "imagenet"


def tasks_from_config(tasks: list | None) -> tuple[TransferTask, ...]:
    """The configured tasks (objects with name, release, label, kind, positive), or the study's five."""
    if not tasks:
        return DEFAULT_TASKS
    built = tuple(TransferTask(t.name, t.release, t.label, t.kind, tuple(t.positive)) for t in tasks)
    names = [t.name for t in built]
    if len(set(names)) != len(names):
        raise ValueError(f"transfer task names must be unique: {names}")
    return built


def per_class_errors(lake: Lake, dataset: pl.DataFrame, runs: pl.DataFrame, image_px: int | None = None) -> pl.DataFrame:
    """(label, <model>...): each class's test error (1 - recall) per model size, mean over the given runs'
    checkpoints. The classes are the study's per-morphology "tasks"."""
    import torch

    from aion_assets.zoo.dataset import CLASSES
    from aion_assets.zoo.models import ZooCNN
    from aion_assets.zoo.pixels import load_pixels
    from aion_assets.zoo.training import predict_logits

    test = dataset.filter(pl.col("split") == "test")
    side = int(image_px or runs["image_px"][0])
    pixels = load_pixels(lake, test, side)
    truth = test["class_index"].to_numpy()
    rows = []
    for run in runs.iter_rows(named=True):
        checkpoint = lake.read_bytes(*zoo_run_checkpoint_path(run["model"], run["fraction"], run["seed"]))
        model = ZooCNN.from_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        predicted = predict_logits(model, pixels).argmax(dim=1).numpy()
        for index, label in enumerate(CLASSES):
            members = truth == index
            if members.any():
                rows.append({"label": label, "model": run["model"], "params": run["params"],
                             "error": float(np.mean(predicted[members] != index))})
    if not rows:
        return pl.DataFrame()
    frame = pl.DataFrame(rows).group_by("label", "model", "params").agg(pl.col("error").mean()).sort("params")
    return frame.pivot(on="model", index="label", values="error").sort("label")


@dataclass
class TransferOutcome:
    folds: pl.DataFrame  # (task, encoder, method, fold, metric, value, n_train, n_test)
    summary: pl.DataFrame  # the zoo_transfer table
    reduction: pl.DataFrame  # (method, task, reduction, reduction_lo, reduction_hi)
    skipped: list[str] = field(default_factory=list)


def _zoo_backbone(lake: Lake, version: int) -> dict:
    import torch

    return torch.load(io.BytesIO(lake.read_bytes(*zoo_encoder_weights_path(version))), map_location="cpu",
                      weights_only=True)


def run_transfer(lake: Lake, cutouts: pl.DataFrame, labels: pl.DataFrame, version: int,
                 tasks: tuple[TransferTask, ...], config, device: str,
                 log: Callable[[str], None] = lambda _: None) -> TransferOutcome:
    """Every task x encoder (ImageNet-only, galaxy-pretrained v``version``) x method (linear probe on all folds,
    end-to-end finetuning on the first ``config.finetune_folds``), on the same folds."""
    import torch

    from aion_assets.encoders.finetuned import read_card, zoo_encoder_spec
    from aion_assets.zoo.backbone import Lite0Network, embed_pixels
    from aion_assets.zoo.crossval import repeated_stratified_folds
    from aion_assets.zoo.pixels import load_pixels
    from aion_assets.zoo.training import TrainConfig
    from aion_assets.zoo.transfer import finetune_predict, fold_rows, linear_probe, task_objects

    side = int(read_card(lake, version)["image_size"])
    zoo_name = zoo_encoder_spec(version)
    backbones = {IMAGENET: None, zoo_name: _zoo_backbone(lake, version)}
    trained_on = lake.read_parquet(*zoo_encoder_trained_on_path(version))["sha256"]
    finetune = TrainConfig(max_epochs=config.finetune_epochs, patience=config.finetune_patience,
                           batch_size=config.finetune_batch_size, learning_rate=config.finetune_learning_rate,
                           seed=config.seed, device=device, eval_batch_size=64,
                           min_round_steps=1)  # finetuning starts from trained weights: judge every epoch
    # Tasks on one release share its images: loaded and embedded once per (encoder, set of objects).
    pixels_of: dict[tuple[str, ...], torch.Tensor] = {}
    features_of: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    rows, skipped = [], []
    for task in tasks:
        objects = task_objects(task, cutouts, labels, trained_on)
        y = objects["y"].to_numpy()
        try:
            folds = repeated_stratified_folds(y, config.n_splits, config.n_repeats, config.seed,
                                              regression=task.kind == "regression")
        except ValueError as error:
            skipped.append(f"{task.name} ({error})")
            continue
        key = (task.release, *objects["object_id"].to_list())
        if key not in pixels_of:
            pixels_of[key] = load_pixels(lake, objects, side)
        pixels = pixels_of[key]
        for encoder, state in backbones.items():
            if (encoder, key) not in features_of:
                features_of[(encoder, key)] = embed_pixels(Lite0Network(2, side, state), pixels, device=device).numpy()
            features = features_of[(encoder, key)]
            for fold, (train, test) in enumerate(folds):
                prediction = linear_probe(task.kind, features[train], y[train], features[test])
                rows.append(fold_rows(task, encoder, "linear_probe", fold, y[test], prediction, len(train)))
                if config.finetune_folds is None or fold < config.finetune_folds:
                    prediction = finetune_predict(
                        task.kind, lambda n, state=state: Lite0Network(n, side, state),
                        pixels[torch.from_numpy(train)], y[train], pixels[torch.from_numpy(test)], finetune)
                    rows.append(fold_rows(task, encoder, "finetune", fold, y[test], prediction, len(train)))
            done = [r for r in rows if r["task"] == task.name and r["encoder"] == encoder]
            log(f"{task.name} / {encoder}: " + ", ".join(
                f"{m} {np.mean([r['value'] for r in done if r['method'] == m]):.3f}"
                for m in ("linear_probe", "finetune") if any(r["method"] == m for r in done)))
    folds_frame = pl.DataFrame(rows) if rows else pl.DataFrame()
    if folds_frame.is_empty():
        raise ValueError("no transfer task could be evaluated: " + "; ".join(skipped))
    return TransferOutcome(folds_frame, summarise_folds(folds_frame), reductions(folds_frame, zoo_name), skipped)


def reductions(folds: pl.DataFrame, candidate: str, baseline: str = IMAGENET) -> pl.DataFrame:
    """Per method: the candidate encoder's relative error reduction against the baseline, per task (paired
    folds) and on average over tasks."""
    from aion_assets.zoo.crossval import summarise_reduction

    frames = []
    for (method,), group in folds.group_by("method", maintain_order=True):
        per_task, n_train, n_test = {}, {}, {}
        for (task,), rows in group.group_by("task", maintain_order=True):
            base = rows.filter(pl.col("encoder") == baseline).sort("fold")
            cand = rows.filter(pl.col("encoder") == candidate).sort("fold")
            per_task[task] = (base["value"].to_numpy(), cand["value"].to_numpy())
            n_train[task], n_test[task] = int(base["n_train"].mean()), int(base["n_test"].mean())
        if min(len(base) for base, _ in per_task.values()) < 2:
            frames.append(_single_fold_reduction(per_task).with_columns(method=pl.lit(method)))
        else:
            frames.append(summarise_reduction(per_task, n_train, n_test).with_columns(method=pl.lit(method)))
    return pl.concat(frames).select("method", "task", "reduction", "reduction_lo", "reduction_hi")


def _single_fold_reduction(per_task: dict[str, tuple[np.ndarray, np.ndarray]]) -> pl.DataFrame:
    """One fold has no spread: the reduction with no interval (a config with finetune_folds=1)."""
    from aion_assets.zoo.crossval import AVERAGE_TASK, relative_reduction

    values = {task: float(np.mean(relative_reduction(base[:1], cand[:1]))) for task, (base, cand) in per_task.items()}
    values[AVERAGE_TASK] = float(np.mean(list(values.values())))
    return pl.DataFrame({"task": list(values), "reduction": list(values.values()),
                         "reduction_lo": [None] * len(values), "reduction_hi": [None] * len(values)},
                        schema={"task": pl.String, "reduction": pl.Float64, "reduction_lo": pl.Float64,
                                "reduction_hi": pl.Float64})
