"""In-domain transfer: does Galaxy Zoo pretraining help on other surveys' tasks? Pure: torch, numpy, sklearn.

Each task is a label of a labelled release, named by configuration (a further release becomes a task without
code). Each encoder is read two ways, as the study did: a linear probe on frozen pooled features, and end-to-end
finetuning of every weight. The folds are repeated and stratified, the same for every encoder and method, so
the two encoders' fold errors pair up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from aion_assets.zoo.training import TrainConfig, predict_logits, train_classifier

TaskKind = Literal["classification", "regression"]
ERROR_METRIC = {"classification": "error_rate", "regression": "rmse"}


@dataclass(frozen=True)
class TransferTask:
    """A label of a release as a downstream task: classification (``positive`` values are class 1) or
    regression of a value in [0, 1] (a vote fraction)."""

    name: str
    release: str
    label: str
    kind: TaskKind
    positive: tuple[str, ...] = ("1",)

    def __post_init__(self) -> None:
        if self.kind not in ERROR_METRIC:
            raise ValueError(f"task {self.name}: kind must be classification or regression, got {self.kind!r}")

    @property
    def metric(self) -> str:
        return ERROR_METRIC[self.kind]


DEFAULT_TASKS: tuple[TransferTask, ...] = (
    TransferTask("ring", "gz-decals-rings", "ring", "classification"),
    TransferTask("lens", "spacewarps-cfhtls", "is_lens", "classification"),
    TransferTask("featured_fraction", "gz-decals-rings", "featured_or_disk_fraction", "regression"),
    TransferTask("not_edge_on_fraction", "gz-decals-rings", "not_edge_on_fraction", "regression"),
    TransferTask("no_spiral_arms_fraction", "gz-decals-rings", "no_spiral_arms_fraction", "regression"),
)


def task_objects(task: TransferTask, cutouts: pl.DataFrame, labels: pl.DataFrame,
                 excluded_sha256: pl.Series | None = None) -> pl.DataFrame:
    """(release, object_id, sha256, shard, row, y) of the task's labelled objects, less any image that trained
    the pretrained encoder. A regression value that is not a number is an error naming the task."""
    values = labels.filter((pl.col("release") == task.release) & (pl.col("name") == task.label))
    if task.kind == "classification":
        y = pl.col("value").is_in(list(task.positive)).cast(pl.Float64)
    else:
        y = pl.col("value").cast(pl.Float64, strict=False)
    rows = (cutouts.filter(pl.col("release") == task.release)
            .select("release", "object_id", "sha256", "shard", "row")
            .join(values.select("release", "object_id", y.alias("y")), on=["release", "object_id"], how="inner"))
    if task.kind == "regression" and rows["y"].null_count():
        raise ValueError(f"task {task.name}: {rows['y'].null_count()} values of {task.label} are not numbers")
    if excluded_sha256 is not None:
        rows = rows.filter(~pl.col("sha256").is_in(excluded_sha256.implode()))
    return rows.sort("object_id")


def error_of(kind: TaskKind, y_true: np.ndarray, prediction: np.ndarray) -> float:
    """Error rate of 0/1 predictions, or RMSE of predicted values."""
    if kind == "classification":
        return float(np.mean((prediction >= 0.5) != (y_true >= 0.5)))
    return float(np.sqrt(np.mean((prediction - y_true) ** 2)))


def linear_probe(kind: TaskKind, train_features: np.ndarray, y_train: np.ndarray,
                 test_features: np.ndarray) -> np.ndarray:
    """Predictions of a linear model on standardised frozen features, its regularisation chosen by inner
    cross-validation on the training fold only: a class probability, or a value clipped to [0, 1]."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "classification":
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 1, 6).tolist(), cv=3,
                                                                     scoring="neg_log_loss", l1_ratios=(0.0,), max_iter=3000,
                                                                     use_legacy_attributes=False))
        model.fit(train_features, y_train.astype(int))
        return model.predict_proba(test_features)[:, 1]
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
    model.fit(train_features, y_train)
    return np.clip(model.predict(test_features), 0.0, 1.0)


def _regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(torch.sigmoid(output[:, 0]), target.float())


def finetune_predict(kind: TaskKind, make_network: Callable[[int], torch.nn.Module], train_pixels: torch.Tensor,
                     y_train: np.ndarray, test_pixels: torch.Tensor, config: TrainConfig,
                     validation_fraction: float = 0.15) -> np.ndarray:
    """Every weight trained on the training fold (early-stopped on a seeded slice of it), then predictions
    for the test fold: a class-1 probability, or a value in [0, 1] (sigmoid output, MSE loss)."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_pixels))
    n_validation = max(2, int(round(validation_fraction * len(order))))
    validation, train = order[:n_validation], order[n_validation:]
    if kind == "classification":
        network, targets, loss_fn = make_network(2), torch.from_numpy(y_train.astype(np.int64)), F.cross_entropy
    else:
        network, targets, loss_fn = make_network(1), torch.from_numpy(y_train.astype(np.float32)), _regression_loss
    index_train, index_validation = torch.from_numpy(train), torch.from_numpy(validation)
    result = train_classifier(network, train_pixels[index_train], targets[index_train],
                              train_pixels[index_validation], targets[index_validation], config, loss_fn=loss_fn)
    logits = predict_logits(result.model, test_pixels, config.eval_batch_size, config.device)
    if kind == "classification":
        return torch.softmax(logits, dim=1)[:, 1].numpy()
    return torch.sigmoid(logits[:, 0]).numpy()


def fold_rows(task: TransferTask, encoder: str, method: str, fold: int, y_test: np.ndarray,
              prediction: np.ndarray, n_train: int) -> dict:
    return {"task": task.name, "encoder": encoder, "method": method, "fold": fold, "metric": task.metric,
            "value": error_of(task.kind, y_test, prediction), "n_train": n_train, "n_test": len(y_test)}


def summarise_folds(folds: pl.DataFrame) -> pl.DataFrame:
    """(task, encoder, method, metric, value, value_lo, value_hi, n_train, n_test, n_folds): the mean over folds
    with the corrected resampled-t interval (n_train and n_test: the mean fold sizes)."""
    from aion_assets.zoo.crossval import corrected_interval

    rows = []
    for (task, encoder, method, metric), group in folds.group_by("task", "encoder", "method", "metric",
                                                                 maintain_order=True):
        n_train, n_test = int(round(group["n_train"].mean())), int(round(group["n_test"].mean()))
        values = group.sort("fold")["value"].to_numpy()
        mean, lo, hi = corrected_interval(values, n_train, n_test) if len(values) > 1 else (float(values[0]), None, None)
        rows.append({"task": task, "encoder": encoder, "method": method, "metric": metric, "value": float(mean),
                     "value_lo": lo, "value_hi": hi, "n_train": n_train, "n_test": n_test, "n_folds": len(values)})
    return pl.DataFrame(rows, schema={"task": pl.String, "encoder": pl.String, "method": pl.String,
                                      "metric": pl.String, "value": pl.Float64, "value_lo": pl.Float64,
                                      "value_hi": pl.Float64, "n_train": pl.Int64, "n_test": pl.Int64,
                                      "n_folds": pl.Int64})
