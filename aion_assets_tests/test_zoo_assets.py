"""The zoo group end to end on small copies of the real releases, through the same runner as the CLI: the split,
scaling runs on part of the grid (MLflow runs, checkpoints), the power-law table, the galaxy-pretrained encoder
(a registered version) and the transfer tables; then the search built on that encoder, whose evaluation pools
leave out every object the encoder trained on."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from aion_assets_tests.subsets import copy_subset

TINY = {
    "zoo_models": {"seeds": [0, 1], "image_px": 32, "base_width": 2, "max_epochs": 2, "patience": 1},
    "zoo_scaling": {"n_bootstrap": 40},
    "zoo_pretrained_encoder": {"image_px": 64, "max_epochs": 1, "train_fraction": 0.5, "batch_size": 16},
    "zoo_transfer": {"n_splits": 2, "n_repeats": 2, "finetune_folds": 1, "finetune_epochs": 1,
                     "finetune_batch_size": 8},
}
GRID = [f"{fraction}|{size}" for size in ("small", "large") for fraction in ("1of4", "1of2", "1of1")]
TINY_TRAINING = {"seeds": [0], "epochs": 3, "batch_size": 32, "hidden_dim": 64, "out_dim": 32}


def _pick(catalog: pl.DataFrame, column: str, per_value: dict[str, int]) -> list[str]:
    return [oid for value, n in per_value.items()
            for oid in catalog.filter(pl.col(column) == value)["object_id"].head(n).to_list()]


@pytest.fixture(scope="module")
def study(tmp_path_factory, sample_releases: Path, shared_data: Path):
    root = tmp_path_factory.mktemp("zoo")
    recorded = [json.loads(line) for line in (shared_data / "descriptions" / "recorded_descriptions.jsonl").open()]
    described = {r["object_id"] for r in recorded if r["release"] == "gz1-sdss"}
    gz1 = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", infer_schema_length=0)
    keep = set(gz1.filter(pl.col("object_id").is_in(list(described)))["object_id"].head(50).to_list())
    keep |= set(_pick(gz1, "gz1_class", {"elliptical": 40, "spiral_clockwise": 10, "spiral_anticlockwise": 10,
                                          "edge_on": 20, "merger": 12, "dont_know": 10}))
    releases = root / "releases"
    copy_subset(sample_releases / "gz1-sdss", releases / "gz1-sdss", sorted(keep))
    rings = pl.read_csv(sample_releases / "gz-decals-rings" / "catalog.csv", infer_schema_length=0)
    copy_subset(sample_releases / "gz-decals-rings", releases / "gz-decals-rings",
                _pick(rings, "ring", {"1": 12, "0": 12}))
    lenses = pl.read_csv(sample_releases / "spacewarps-cfhtls" / "catalog.csv", infer_schema_length=0)
    copy_subset(sample_releases / "spacewarps-cfhtls", releases / "spacewarps-cfhtls",
                _pick(lenses, "is_lens", {"1": 10, "0": 10}))

    mp = pytest.MonkeyPatch()
    for var in ("DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI", "AION_MLFLOW_ARTIFACTS",
                "ANTHROPIC_API_KEY", "AION_DESCRIBER", "AION_IMAGE_ENCODER"):
        mp.delenv(var, raising=False)
    mp.setenv("AION_HOME", str(root / "aion"))
    mp.setenv("AION_RELEASES_DIR", str(releases))

    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize, stack_instance

    instance = stack_instance()
    register_release_partitions(instance)

    def run(selection: str, **options):
        return materialize(build_definitions(), selection, instance, op_config={**TINY, "alignment_model":
                           TINY_TRAINING}, progress=lambda line: None, **options)

    summaries = run("group:cutouts or key:zoo_dataset")
    summaries += run("key:zoo_models", partition_keys=GRID)
    summaries += run("key:zoo_scaling or key:zoo_pretrained_encoder or key:zoo_transfer")
    mp.setenv("AION_IMAGE_ENCODER", "zoo-lite0-v1")
    from aion_assets.cli import DEMO_SELECTION

    search = run(DEMO_SELECTION)
    yield {"summaries": summaries, "search": search, "instance": instance, "root": root}
    mp.undo()


def _warehouse():
    from aion_assets.platform.warehouse import stack_warehouse

    return stack_warehouse()


def _lake():
    from aion_assets.platform.lake import Lake
    from aion_assets.platform.settings import get_settings

    return Lake(get_settings().lake_root)


def test_every_zoo_run_succeeds_in_lineage_order(study) -> None:
    assert all(s.success for s in study["summaries"] + study["search"])
    names = [name for s in study["summaries"] for name in s.assets]
    assert names.index("zoo_dataset") < names.index("zoo_models") < names.index("zoo_scaling")
    assert names.count("zoo_models") == len(GRID)


def test_the_dataset_split_is_by_image_and_its_check_passes(study) -> None:
    from dagster import AssetKey

    dataset = _warehouse().query("SELECT * FROM zoo_dataset")
    assert set(dataset["split"]) == {"train", "validation", "test"}
    assert set(dataset["label"]) >= {"elliptical", "spiral", "edge_on", "merger"}  # spiral senses merged
    checks = study["instance"].event_log_storage.get_latest_asset_check_execution_by_key(
        [__import__("dagster").AssetCheckKey(AssetKey("zoo_dataset"), "zoo_splits_disjoint_by_image")])
    (execution,) = checks.values()
    assert execution.evaluation.passed


def test_each_scaling_run_is_an_mlflow_run_with_its_checkpoint(study) -> None:
    import mlflow

    from aion_assets.platform.layout import zoo_run_checkpoint_path

    runs = mlflow.search_runs(experiment_names=["aion-zoo"], filter_string="params.size != ''")
    assert len(runs) == len(GRID) * len(TINY["zoo_models"]["seeds"])
    assert runs["metrics.test_loss"].notna().all() and runs["metrics.test_error"].between(0, 1).all()
    for key in GRID:
        fraction, size = key.split("|")
        for seed in TINY["zoo_models"]["seeds"]:
            assert _lake().exists(*zoo_run_checkpoint_path(size, fraction, seed))


def test_the_scaling_table_holds_points_and_fits_per_size(study) -> None:
    table = _warehouse().query("SELECT * FROM zoo_scaling")
    assert table.columns == ["model", "params", "n_train", "seed", "test_loss", "test_error", "alpha", "alpha_lo",
                             "alpha_hi", "a", "c"]
    assert table.height == len(GRID) * 2 and set(table["model"]) == {"small", "large"}
    assert table["alpha"].null_count() == 0  # three training-set sizes per model: a fit each
    per_model = table.group_by("model").agg(pl.col("params").first(), pl.col("n_train").n_unique().alias("sizes"))
    assert per_model["sizes"].to_list() == [3, 3]
    assert _warehouse().query("SELECT * FROM zoo_parameters").height == 2


def test_the_pretrained_encoder_is_a_registered_version_trained_without_test_objects(study) -> None:
    from mlflow.tracking import MlflowClient

    from aion_assets.platform.layout import zoo_encoder_card_path, zoo_encoder_trained_on_path

    (version,) = MlflowClient().search_model_versions("name='aion-zoo-encoder'")
    assert int(version.version) == 1
    card = json.loads(_lake().read_bytes(*zoo_encoder_card_path(1)))
    assert card["image_size"] == 64 and 0 <= card["test_error"] <= 1
    trained = _lake().read_parquet(*zoo_encoder_trained_on_path(1))
    test = _warehouse().query("SELECT object_id, sha256 FROM zoo_dataset WHERE split = 'test'")
    assert set(trained["split"]) == {"train", "validation"}
    assert not set(trained["sha256"]) & set(test["sha256"])


def test_transfer_tables_pair_both_encoders_and_methods_per_task(study) -> None:
    summary = _warehouse().query("SELECT * FROM zoo_transfer")
    assert summary.columns[:9] == ["task", "encoder", "method", "metric", "value", "value_lo", "value_hi",
                                   "n_train", "n_test"]
    assert summary.height == 5 * 2 * 2
    assert set(summary["encoder"]) == {"imagenet", "zoo-lite0-v1"}
    probes = summary.filter(pl.col("method") == "linear_probe")
    assert (probes["n_folds"] == 4).all() and (probes["value_lo"] <= probes["value"]).all()
    assert set(summary.filter(pl.col("task") == "lens")["metric"]) == {"error_rate"}
    assert set(summary.filter(pl.col("task") == "featured_fraction")["metric"]) == {"rmse"}
    reduction = _warehouse().query("SELECT * FROM zoo_transfer_reduction")
    assert reduction.filter(pl.col("task") == "average").height == 2  # one per method


def test_search_on_the_pretrained_encoder_leaves_its_training_objects_out_of_every_pool(study) -> None:
    from aion_assets.platform.layout import evaluation_pools_path, training_set_path, zoo_encoder_trained_on_path

    figures = _warehouse().query("SELECT * FROM eval_results")
    assert set(figures["image_encoder"]) == {"zoo-lite0-v1-fp32"}
    assert "zoo-lite0-v1-fp32" in figures["excluded_by"][0]
    version = int(figures["model_version"].max())
    pools = _lake().read_parquet(*evaluation_pools_path(version))
    dataset = _warehouse().query("SELECT * FROM zoo_dataset")
    pooled_gz1 = set(pools.filter(pl.col("release") == "gz1-sdss")["object_id"])
    trained = _lake().read_parquet(*zoo_encoder_trained_on_path(1))
    assert pooled_gz1 and not pooled_gz1 & set(trained["object_id"])
    assert not set(pools["sha256"]) & set(trained["sha256"])
    # with the whole train split used (the default) the gz1 pools are the zoo test split: here half of it was
    left_out_of_training = dataset.join(trained, on="object_id", how="anti")["object_id"]
    assert pooled_gz1 <= set(left_out_of_training)
    heads_set = _lake().read_parquet(*training_set_path(version))
    test_ids = set(dataset.filter(pl.col("split") == "test")["object_id"])
    assert not set(heads_set["object_id"]) & test_ids  # the heads never train on the zoo test split either
