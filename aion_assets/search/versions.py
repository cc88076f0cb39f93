"""The heads versions the lake holds, what each was trained on and scored, and which may be pruned. No dagster.

A version is the registered MLflow model version of `aion-search-heads`; its lake folders are named by it. The
served version (`latest.json`) and any version MLflow marks as production (the alias ``production``, or the
legacy stage "Production") are never pruned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import search_index_dir
from aion_assets.platform.warehouse import Warehouse
from aion_assets.search.artifacts import (
    ModelVersionMissing,
    delete_version,
    load_training_set,
    read_latest_pointer,
    trained_versions,
)

REGISTERED_MODEL = "aion-search-heads"
PRODUCTION_ALIAS = "production"


@dataclass(frozen=True)
class ModelVersionInfo:
    version: int
    mlflow_run_id: str | None
    n_train: int | None
    val_mrr_mean: float | None
    ndcg_at_10_release: float | None  # text search, mean over targets, the latest evaluation of this version
    ndcg_at_10_survey: float | None
    in_lake: bool
    has_index: bool
    latest: bool
    production: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _served_version(lake: Lake) -> int | None:
    try:
        return read_latest_pointer(lake).version
    except ModelVersionMissing:
        return None


def _registry(tracking_uri: str) -> dict[int, dict]:
    """MLflow's view of each version: run id, validation MRR, whether it is marked production."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    except MlflowException:
        return {}
    production: set[int] = set()
    try:
        production.add(int(client.get_model_version_by_alias(REGISTERED_MODEL, PRODUCTION_ALIAS).version))
    except MlflowException:
        pass
    registry = {}
    for entry in found:
        metrics = client.get_run(entry.run_id).data.metrics if entry.run_id else {}
        registry[int(entry.version)] = {
            "run_id": entry.run_id, "val_mrr_mean": metrics.get("val_mrr_mean"),
            "production": int(entry.version) in production or (entry.current_stage or "").lower() == "production",
        }
    return registry


def _headline(warehouse: Warehouse) -> pl.DataFrame:
    """Mean text-search nDCG@10 per (model_version, pool) from each version's latest evaluation."""
    if "eval_results" not in warehouse.tables():
        return pl.DataFrame(schema={"model_version": pl.Int64, "pool": pl.String, "ndcg": pl.Float64})
    return warehouse.query(
        "WITH latest AS (SELECT model_version, max(created_at) AS created_at FROM eval_results GROUP BY ALL) "
        "SELECT e.model_version, e.pool, avg(e.value) AS ndcg FROM eval_results e JOIN latest USING "
        "(model_version, created_at) WHERE e.method = 'text_search' AND e.metric = 'ndcg@10' GROUP BY ALL")


def list_versions(lake: Lake, warehouse: Warehouse, tracking_uri: str) -> list[ModelVersionInfo]:
    registry, served, headline = _registry(tracking_uri), _served_version(lake), _headline(warehouse)

    def figure(version: int, pool: str) -> float | None:
        row = headline.filter((pl.col("model_version") == version) & (pl.col("pool") == pool))
        return float(row["ndcg"][0]) if row.height else None

    infos = []
    held = set(trained_versions(lake))
    for version in sorted(held | set(registry)):
        entry = registry.get(version, {})
        try:
            n_train = int((load_training_set(lake, version)["split"] == "train").sum())
        except ModelVersionMissing:
            n_train = None
        infos.append(ModelVersionInfo(
            version=version, mlflow_run_id=entry.get("run_id"), n_train=n_train,
            val_mrr_mean=entry.get("val_mrr_mean"), ndcg_at_10_release=figure(version, "release"),
            ndcg_at_10_survey=figure(version, "survey"), in_lake=version in held, has_index=lake.exists(*search_index_dir(version)),
            latest=version == served, production=bool(entry.get("production")),
        ))
    return infos


def versions_to_prune(infos: list[ModelVersionInfo], keep: int) -> list[int]:
    """Versions held in the lake beyond the ``keep`` newest, never the served one nor one marked production."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    newest_first = sorted((i for i in infos if i.in_lake), key=lambda i: i.version, reverse=True)
    return sorted(i.version for i in newest_first[keep:] if not i.latest and not i.production)


def prune(lake: Lake, versions: list[int]) -> dict[int, list[str]]:
    return {version: delete_version(lake, version) for version in versions}
