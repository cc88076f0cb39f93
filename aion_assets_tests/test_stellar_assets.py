"""The stellar group end to end on a subset of the real tables, through the same runner as the CLI: catalogue,
a tiny emulator (MLflow run, registered version), posteriors, evaluation and its checks; then `aion stellar
predict`, a second version beside the first, and a failed catalogue run that leaves the tables as they were."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

TINY = {
    "stellar_emulator": {"steps": 40, "batch_size": 64, "eval_every": 20, "embedding_dim": 16, "num_layers": 1,
                         "head_layers": 2, "head_width": 32, "diffusion_steps": 20},
    "stellar_posteriors": {"n_samples": 48, "max_stars": 40, "max_stars_left_out": 12},
    "stellar_eval": {"repeated_splits": 2, "bootstrap": 20, "gaussian_epochs": 5},
}


def _subset(source: Path, target: Path, head: int, keep=None) -> None:
    frame = pl.read_csv(source, infer_schema_length=0)
    rows = frame.head(head)
    if keep is not None:
        rows = pl.concat([rows, frame.slice(head).filter(keep)])
    rows.write_csv(target)


@pytest.fixture(scope="module")
def stellar_tables(tmp_path_factory, shared_data: Path) -> Path:
    """Every DR10 star (the shifted rows among them), the first DR12 stars, and the first SEGUE stars plus the
    ones with a leaked sentinel or an implausible colour."""
    source, folder = shared_data / "stellar", tmp_path_factory.mktemp("stellar-tables")
    _subset(source / "apogee_dr10_reference_labels.csv", folder / "apogee_dr10_reference_labels.csv", 10_000)
    _subset(source / "apogee_dr12_labels.csv", folder / "apogee_dr12_labels.csv", 2500)
    implausible = pl.any_horizontal(pl.col(c).cast(pl.Float64).abs() > 5 for c in ("ug", "gr", "ri", "iz"))
    _subset(source / "segue_colors_feh.csv", folder / "segue_colors_feh.csv", 2500, keep=implausible)
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory, stellar_tables: Path):
    root = tmp_path_factory.mktemp("stellar-stack")
    mp = pytest.MonkeyPatch()
    for var in ("DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI", "AION_MLFLOW_ARTIFACTS"):
        mp.delenv(var, raising=False)
    mp.setenv("AION_HOME", str(root / "aion"))
    mp.setenv("AION_STELLAR_DIR", str(stellar_tables))

    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize, stack_instance

    instance = stack_instance()
    summaries = materialize(build_definitions(), "group:stellar", instance, op_config=TINY,
                            progress=lambda line: None)
    yield {"instance": instance, "summaries": summaries, "tables": stellar_tables, "mp": mp,
           "materialize": materialize, "build": build_definitions}
    mp.undo()


def _warehouse():
    from aion_assets.platform.warehouse import stack_warehouse

    return stack_warehouse()


def test_every_stellar_asset_materializes_in_lineage_order(stack) -> None:
    assert [name for s in stack["summaries"] for name in s.assets] == [
        "stellar_catalog", "stellar_emulator", "stellar_posteriors", "stellar_eval"]
    assert all(s.success for s in stack["summaries"])


def test_the_catalogue_tables_hold_unified_names_splits_and_the_quarantine(stack) -> None:
    warehouse = _warehouse()
    sources = warehouse.query("SELECT DISTINCT source FROM stellar_catalog ORDER BY source")["source"].to_list()
    assert sources == ["apogee_dr10", "apogee_dr12", "segue"]
    teff_sources = warehouse.query("SELECT DISTINCT source FROM stellar_catalog WHERE name = 'teff'")
    assert set(teff_sources["source"]) == {"apogee_dr10", "apogee_dr12"}
    # One star, one split, whichever catalogues measured it.
    assert warehouse.query("SELECT count(*) AS n FROM (SELECT star_id FROM stellar_catalog GROUP BY star_id "
                           "HAVING count(DISTINCT split) > 1)")["n"][0] == 0
    quarantine = warehouse.query("SELECT * FROM stellar_quarantine")
    assert {"apogee_dr10", "segue"} <= set(quarantine["source"])
    assert quarantine["reason"].str.len_chars().min() > 10
    assert warehouse.query("SELECT max(abs(value)) AS m FROM stellar_catalog WHERE name IN "
                           "('u_g', 'g_r', 'r_i', 'i_z', 'j_h', 'j_k')")["m"][0] <= 5
    standardisation = warehouse.query("SELECT * FROM stellar_standardisation")
    assert (standardisation["mad"] > 0).all()


def test_the_emulator_is_an_mlflow_run_and_a_registered_version_in_the_lake(stack) -> None:
    from mlflow.tracking import MlflowClient

    from aion_assets.platform.settings import get_settings
    from aion_assets.stellar.artifacts import REGISTERED_MODEL, trained_versions

    client = MlflowClient(get_settings().mlflow_tracking_uri)
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    assert [int(v.version) for v in versions] == [1]
    run = client.get_run(versions[0].run_id)
    assert run.data.params["steps"] == "40" and "validation_loss" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "validation_loss")
    assert len(history) >= 2  # a curve, not a single number
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "emulator")}
    assert {"emulator/emulator.pt", "emulator/standardisation.parquet"} <= artifacts
    assert trained_versions(_warehouse().lake) == [1]


def test_posteriors_cover_every_task_and_variant_with_ordered_summaries(stack) -> None:
    from aion_assets.platform.layout import stellar_samples_path
    from aion_assets.stellar.tasks import TASKS

    warehouse = _warehouse()
    posteriors = warehouse.query("SELECT * FROM stellar_posteriors")
    asked = set(posteriors.select("task", "variant").unique().iter_rows())
    expected = {(task.name, variant) for task in TASKS for variant, _ in task.variants()}
    assert asked == expected
    ordered = posteriors.select((pl.col("p2_5") <= pl.col("p16")) & (pl.col("p16") <= pl.col("median"))
                                & (pl.col("median") <= pl.col("p84")) & (pl.col("p84") <= pl.col("p97_5")))
    assert ordered.to_series().all()
    # A left-out input is not among the inputs used; the target never is.
    for row in posteriors.select("target", "variant", "inputs").unique().iter_rows(named=True):
        inputs = row["inputs"].split(",")
        assert row["target"] not in inputs
        if row["variant"].startswith("without_"):
            assert row["variant"].removeprefix("without_") not in inputs
    some = posteriors.filter((pl.col("task") == "logg_from_teff_mh") & (pl.col("variant") == "all"))
    samples = warehouse.lake.read_array(*stellar_samples_path(1, "logg_from_teff_mh", "all"))
    assert samples.shape == (some.height, TINY["stellar_posteriors"]["n_samples"])
    assert np.allclose(np.median(samples, axis=1), some.sort("row")["median"], atol=1e-4)


def test_eval_compares_three_methods_on_every_task_and_reports_spread_where_small(stack) -> None:
    warehouse = _warehouse()
    figures = warehouse.query("SELECT * FROM stellar_eval WHERE variant = 'all'")
    by_task = figures.group_by("task").agg(pl.col("method").unique().sort())
    assert {tuple(m) for m in by_task["method"]} == {("boosted", "emulator", "gaussian")}
    emulator = figures.filter(pl.col("method") == "emulator")
    assert set(emulator["metric"]) >= {"mad_std", "bias", "coverage_68", "coverage_95", "crps"}
    small = figures.filter((pl.col("task") == "teff_from_2mass") & (pl.col("metric") == "mad_std"))
    assert small.height == 3 and small["spread"].is_not_null().all()
    assert figures.filter(pl.col("task") == "feh_from_colours")["spread"].is_null().all()
    assert warehouse.query("SELECT count(*) AS n FROM stellar_eval WHERE variant = 'red_clump'")["n"][0] >= 2


def test_both_checks_ran_and_say_what_they_judged(stack) -> None:
    instance = stack["instance"]
    for check in ("posterior_coverage_calibrated", "red_clump_posterior_bimodal"):
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("stellar_eval"), check)])[dg.AssetCheckKey(dg.AssetKey("stellar_eval"),
                                                                                     check)]
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.metadata, check


def test_eval_materialization_carries_its_plots(stack) -> None:
    event = stack["instance"].get_latest_materialization_event(dg.AssetKey("stellar_eval"))
    metadata = event.asset_materialization.metadata
    for name in ("medians_vs_truth", "calibration", "pit", "figures"):
        assert name in metadata
    assert "data:image/png;base64," in metadata["calibration"].value


def test_predict_prints_a_posterior_and_refuses_bad_input_in_one_line(stack) -> None:
    from aion_assets.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["stellar", "predict", "--given", "teff=4900,m_h=-0.2", "--target", "logg",
                                  "--samples", "64", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["model_version"] == 1 and answer["given"] == {"teff": 4900.0, "m_h": -0.2}
    assert answer["p2_5"] <= answer["p16"] <= answer["median"] <= answer["p84"] <= answer["p97_5"]
    shown = runner.invoke(main, ["stellar", "predict", "--given", "", "--target", "teff", "--samples", "64"])
    assert shown.exit_code == 0 and "the prior" in shown.output and "#" in shown.output
    for given, target, fragment in (("tef=4900", "logg", "unknown name"), ("teff=nan", "logg", "finite"),
                                    ("logg=2.5", "logg", "both the target"), ("teff=hot", "logg", "not a number")):
        bad = runner.invoke(main, ["stellar", "predict", "--given", given, "--target", target])
        assert bad.exit_code != 0
        message = (bad.stderr if hasattr(bad, "stderr") else bad.output).strip()
        assert fragment in message and len(message.splitlines()) == 1, message


def test_a_second_version_lives_beside_the_first_and_a_failed_catalogue_keeps_the_tables(stack,
                                                                                          tmp_path: Path) -> None:
    instance, materialize, build = stack["instance"], stack["materialize"], stack["build"]
    summaries = materialize(build(), "stellar_emulator+", instance, op_config=TINY, progress=lambda line: None)
    assert all(s.success for s in summaries)
    warehouse = _warehouse()
    assert warehouse.query("SELECT DISTINCT model_version FROM stellar_posteriors ORDER BY 1")[
        "model_version"].to_list() == [1, 2]
    before = warehouse.query("SELECT count(*) AS n FROM stellar_catalog")["n"][0]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "apogee_dr12_labels.csv").write_text("not,the,columns\n1,2,3\n")
    stack["mp"].setenv("AION_STELLAR_DIR", str(broken))
    try:
        failed = materialize(build(), "stellar_catalog", instance, op_config=TINY, progress=lambda line: None)
    finally:
        stack["mp"].setenv("AION_STELLAR_DIR", str(stack["tables"]))
    assert not failed[0].success
    assert warehouse.query("SELECT count(*) AS n FROM stellar_catalog")["n"][0] == before
