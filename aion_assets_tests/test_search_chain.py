"""The whole search chain on a small real subset, through the same runner as `aion demo`: ingest, describe
(recorded answers), embed, train, index, evaluate; then the CLI contract, MLflow lineage and staleness."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from aion_assets_tests.subsets import copy_subset

TINY_TRAINING = {"seeds": [0], "epochs": 4, "batch_size": 32, "hidden_dim": 128, "out_dim": 64}
DUPLICATE_ID = "planted-duplicate-of-a-training-image"


@pytest.fixture(scope="module")
def chain(tmp_path_factory, sample_releases: Path, shared_data: Path):
    """Materialize everything once for this module; tests read what it made."""
    root = tmp_path_factory.mktemp("chain")
    recorded = [json.loads(line) for line in (shared_data / "descriptions" / "recorded_descriptions.jsonl").open()]
    described = {(r["release"], r["object_id"]) for r in recorded}
    gz1 = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", infer_schema_length=0)
    in_sample = gz1.filter(pl.struct("object_id").map_elements(
        lambda s: ("gz1-sdss", s["object_id"]) in described, return_dtype=pl.Boolean))
    keep = set(in_sample["object_id"].head(90).to_list())
    for cls, n in (("merger", 12), ("spiral_clockwise", 15), ("edge_on", 15), ("elliptical", 30)):
        keep |= set(gz1.filter((pl.col("gz1_class") == cls) & ~pl.col("object_id").is_in(list(keep)))["object_id"]
                    .head(n).to_list())
    releases = root / "releases"
    copy_subset(sample_releases / "gz1-sdss", releases / "gz1-sdss", sorted(keep))
    _plant_duplicate(releases / "gz1-sdss", in_sample["object_id"][0])
    rings = pl.read_csv(sample_releases / "gz-decals-rings" / "catalog.csv", infer_schema_length=0)["object_id"]
    copy_subset(sample_releases / "gz-decals-rings", releases / "gz-decals-rings", rings.head(40).to_list())

    mp = pytest.MonkeyPatch()
    for var in ("DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI", "AION_MLFLOW_ARTIFACTS",
                "ANTHROPIC_API_KEY", "AION_DESCRIBER"):
        mp.delenv(var, raising=False)
    mp.setenv("AION_HOME", str(root / "aion"))
    mp.setenv("AION_RELEASES_DIR", str(releases))
    mp.setenv("AION_SHARD_SIZE", "80")  # several partitions per release, as in a real survey

    from aion_assets.cli import DEMO_SELECTION
    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize, stack_instance

    instance = stack_instance()
    register_release_partitions(instance)
    summaries = materialize(build_definitions(), DEMO_SELECTION, instance,
                            op_config={"alignment_model": TINY_TRAINING}, progress=lambda line: None)
    yield {"instance": instance, "summaries": summaries, "root": root, "mp": mp}
    mp.undo()


def _plant_duplicate(release: Path, object_id: str) -> None:
    """A byte-identical copy of a described object's image under a new id: the same training image."""
    catalog = pl.read_csv(release / "catalog.csv", infer_schema_length=0)
    original = catalog.filter(pl.col("object_id") == object_id)
    copy_path = f"images/{DUPLICATE_ID}.jpg"
    shutil.copyfile(release / original["image"][0], release / copy_path)
    planted = original.with_columns(pl.lit(DUPLICATE_ID).alias("object_id"), pl.lit(copy_path).alias("image"))
    pl.concat([catalog, planted]).write_csv(release / "catalog.csv")


def _warehouse():
    from aion_assets.platform.warehouse import stack_warehouse

    return stack_warehouse()


def test_every_run_succeeds_and_eval_has_all_methods_and_pools(chain) -> None:
    assert chain["summaries"] and all(s.success for s in chain["summaries"])
    warehouse = _warehouse()
    figures = warehouse.query("SELECT * FROM eval_results")
    assert set(figures["method"]) == {"text_search", "image_similarity", "random"}
    assert set(figures["pool"]) == {"release", "survey"}
    assert set(figures["metric"]) == {"ndcg@10", "recall@100", "ap@100", "lift@10"}
    assert {"mergers", "spiral_arms", "edge_on_disks", "rings"} <= set(figures["target"])
    bounded = figures.filter(pl.col("metric") != "lift@10")
    assert bounded["value"].is_between(0.0, 1.0).all()
    # Random ranking's lift is 1 by definition; the survey pool of a target is larger than its release pool.
    assert figures.filter((pl.col("method") == "random") & (pl.col("metric") == "lift@10"))["value"].eq(1.0).all()
    sizes = figures.filter(pl.col("target") == "rings").group_by("pool").agg(pl.col("pool_size").first())
    by_pool = dict(sizes.iter_rows())
    assert by_pool["survey"] > by_pool["release"]
    leaderboard = warehouse.query("SELECT * FROM eval_leaderboard")
    assert leaderboard.height == figures.height


def test_pools_exclude_the_training_set_by_id_and_by_image(chain) -> None:
    from aion_assets.platform.layout import evaluation_pools_path
    from aion_assets.search.artifacts import load_training_set, read_latest_pointer

    warehouse = _warehouse()
    lake = warehouse.lake
    version = read_latest_pointer(lake).version
    training = load_training_set(lake, version)
    pools = lake.read_parquet(*evaluation_pools_path(version))
    cutouts = warehouse.query("SELECT release, object_id, sha256 FROM cutouts")
    planted = cutouts.filter(pl.col("object_id") == DUPLICATE_ID)
    # The planted copy was ingested under its own id and was never described, but its image trained the heads.
    assert planted.height == 1 and planted["sha256"][0] in set(training["sha256"])
    assert DUPLICATE_ID not in set(training["object_id"])
    assert DUPLICATE_ID not in set(pools["object_id"])
    assert not set(pools["sha256"]) & set(training["sha256"])
    assert pools.join(training, on=["release", "object_id"], how="semi").is_empty()
    # Everything else of the release is pooled: the exclusion removes exactly the training images.
    gz1 = cutouts.filter((pl.col("release") == "gz1-sdss") & ~pl.col("sha256").is_in(training["sha256"].implode()))
    release_pool = pools.filter((pl.col("target") == "mergers") & (pl.col("pool") == "release"))
    assert release_pool.height == gz1.height
    check = chain["instance"].event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("retrieval_eval"), "pools_exclude_training_set")])
    evaluation = next(iter(check.values())).event.dagster_event.event_specific_data
    assert evaluation.passed and evaluation.blocking


def test_materializations_carry_their_pictures(chain) -> None:
    import base64
    import io
    import re

    from PIL import Image

    def images(asset: str, partition: str | None = None) -> dict[str, tuple[int, int]]:
        event = chain["instance"].get_latest_materialization_event(dg.AssetKey(asset))
        found = {}
        for name, value in event.asset_materialization.metadata.items():
            match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", str(getattr(value, "value", "")))
            if match:
                found[name] = Image.open(io.BytesIO(base64.b64decode(match.group(1)))).size
        return found

    assert "training_curves" in images("alignment_model")
    assert {"figures", "gallery"} <= set(images("retrieval_eval"))


def test_mlflow_run_and_registered_version(chain) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from aion_assets.platform.settings import get_settings

    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    versions = client.search_model_versions("name='aion-search-heads'")
    assert len(versions) == 1
    run = client.get_run(versions[0].run_id)
    assert "val_loss" in run.data.metrics and "temperature" in run.data.metrics
    assert any(key.startswith("eval/") for key in run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert len(history) == TINY_TRAINING["epochs"] + 1
    # Training on real descriptions of real cutouts lowers the validation loss below the untrained heads'.
    by_step = {m.step: m.value for m in history}
    assert min(by_step[s] for s in by_step if s > 0) < by_step[0]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "heads")]
    assert artifacts == ["heads/heads.safetensors", "heads/training_set.parquet"]
    event = chain["instance"].get_latest_materialization_event(dg.AssetKey("alignment_model"))
    metadata = event.asset_materialization.metadata
    assert metadata["mlflow_run_id"].value == run.info.run_id
    assert metadata["model_version"].value == int(versions[0].version)
    assert set(metadata["input_data_versions"].value) == {"text_embeddings", "vlm_descriptions", "description_sample"}
    del mlflow


def test_search_and_similar_json_contract(chain, tmp_path: Path) -> None:
    from aion_assets.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["search", "merging galaxies with tidal tails", "--k", "7", "--json",
                                  "--gallery", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.splitlines()[0])
    assert [r["rank"] for r in rows] == list(range(1, 8))
    # the version scores artefacts exactly when its descriptions named enough of them to fit the classifier
    fitted = _artefact_model_fitted()
    columns = {"rank", "object_id", "release", "score"} | ({"artefact_score"} if fitted else set())
    assert all(set(r) == columns for r in rows)
    likely = [r.get("artefact_score", 0.0) >= 0.5 for r in rows]
    assert likely == sorted(likely), "a likely artefact is listed before a cutout that is probably a galaxy"
    for group in (False, True):  # within each group, by score
        scores = [r["score"] for r, artefact in zip(rows, likely) if artefact == group]
        assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= r["artefact_score"] <= 1.0 for r in rows if fitted)
    assert (tmp_path / "g.png").stat().st_size > 1000

    only_rings = json.loads(runner.invoke(main, ["search", "a ring galaxy", "--release", "gz-decals-rings",
                                                 "--json"]).stdout)
    assert len(only_rings) == 10 and {r["release"] for r in only_rings} == {"gz-decals-rings"}

    anchor = rows[0]
    similar = runner.invoke(main, ["similar", anchor["object_id"], "--release", anchor["release"], "--k", "5",
                                   "--json"])
    assert similar.exit_code == 0, similar.output
    neighbours = json.loads(similar.stdout)
    assert len(neighbours) == 5 and anchor["object_id"] not in {n["object_id"] for n in neighbours}

    missing = runner.invoke(main, ["similar", "no-such-object", "--json"])
    assert missing.exit_code == 1 and "not in the image-similarity index" in missing.output


def _artefact_model_fitted() -> bool:
    """Whether the served version has an artefact classifier, and that it should (>= 5 artefacts among the
    summaries of its training set: the classifier's 5 folds each need one)."""
    from aion_assets.platform.layout import CURRENT_DESCRIPTIONS
    from aion_assets.search.artefacts import artefact_labels
    from aion_assets.search.artifacts import load_artefact_model, load_training_set, read_latest_pointer

    lake = _warehouse().lake
    version = read_latest_pointer(lake).version
    training = load_training_set(lake, version)
    summaries = lake.read_parquet(*CURRENT_DESCRIPTIONS).join(training, on=["release", "object_id"], how="semi")
    labels = artefact_labels(summaries["summary"].to_list())
    expected = labels.sum() >= 5 and (len(labels) - labels.sum()) >= 5
    fitted = load_artefact_model(lake, version) is not None
    assert fitted == expected
    return fitted


def test_rerank_without_key_fails_in_one_line_and_writes_nothing(chain, monkeypatch) -> None:
    from aion_assets.cli import main

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["search", "a ring galaxy", "--rerank", "--json"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "ANTHROPIC_API_KEY" in result.output
    assert "rerank_results" not in _warehouse().tables()


def test_rerank_reorders_by_vlm_score_and_is_stored(chain, fake_anthropic, dummy_api_key, monkeypatch) -> None:
    from aion_assets.cli import main

    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    result = CliRunner().invoke(main, ["search", "a ring galaxy", "--rerank", "--candidates", "8", "--k", "5",
                                       "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [r["rank"] for r in shown] == [1, 2, 3, 4, 5]
    assert [r["score"] for r in shown] == sorted((r["score"] for r in shown), reverse=True)
    assert fake_anthropic.count("POST", "/v1/messages") == 8
    stored = _warehouse().query("SELECT * FROM rerank_results ORDER BY rank_after")
    assert stored.height == 8 and sorted(stored["rank_before"]) == list(range(1, 9))
    assert stored["object_id"].head(5).to_list() == [r["object_id"] for r in shown]
    assert dummy_api_key not in stored.write_csv()


def _stale_keys(instance, defs) -> set[str]:
    """The demo's assets (the ones this chain materialized) that the UI would badge as changed."""
    # The resolver the UI uses for its "changed" badges (internal API: no public one exists in 1.13).
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from aion_assets.cli import DEMO_SELECTION

    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph,
                                          loading_context=LoadingContextForTest(instance))
    stale = set()
    for key in dg.AssetSelection.from_string(DEMO_SELECTION).resolve(graph):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        partitions = (node.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
                      if node.partitions_def else [None])
        if any(resolver.get_status(key, partition) != StaleStatus.FRESH for partition in partitions):
            stale.add(key.to_user_string())
    return stale


def test_changed_text_encoder_marks_exactly_its_downstream(chain, tmp_path: Path) -> None:
    """The model's name is part of the code version of everything computed through it, so the UI marks all of
    it at once; SQL models over their tables follow by data version once those are re-materialized."""
    from aion_assets.definitions import build_definitions
    from aion_assets.encoders.text import packaged_minilm_path

    instance = chain["instance"]
    assert _stale_keys(instance, build_definitions()) == set()
    renamed = tmp_path / "minilm-retrained"  # another model folder (its files linked, not copied)
    shutil.copytree(packaged_minilm_path(), renamed, copy_function=os.symlink)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AION_TEXT_ENCODER", str(renamed))
        stale = _stale_keys(instance, build_definitions())
    assert stale == {"text_embeddings", "alignment_model", "search_embeddings", "search_index_quantizer",
                     "search_index_shards", "search_index", "retrieval_eval"}


def test_retrieval_eval_gains_reranked_method_with_a_key(chain, fake_anthropic, dummy_api_key,
                                                         monkeypatch) -> None:
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize

    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    summaries = materialize(build_definitions(), "key:retrieval_eval+", chain["instance"],
                            op_config={"retrieval_eval": {"rerank_candidates": 6}}, progress=lambda _: None)
    assert all(s.success for s in summaries)
    warehouse = _warehouse()
    latest = warehouse.query("SELECT * FROM eval_results WHERE created_at = (SELECT max(created_at) FROM eval_results)")
    targets = set(latest["target"])
    # The paid re-ranker judges each target's release pool only.
    reranked = latest.filter(pl.col("method") == "reranked")
    assert set(reranked["target"]) == targets and set(reranked["pool"]) == {"release"}
    assert fake_anthropic.count("POST", "/v1/messages") == 6 * len(targets)
    assert warehouse.query("SELECT count(*) AS n FROM rerank_results")["n"][0] >= 6 * len(targets)


def test_a_second_model_version_serves_beside_the_first_then_prune(chain) -> None:
    from aion_assets.cli import main
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize

    # the second version is a seed ensemble: its wider vectors go through the same chain
    summaries = materialize(build_definitions(), "key:alignment_model+", chain["instance"],
                            op_config={"alignment_model": {**TINY_TRAINING, "seeds": [1, 2], "ensemble": True}},
                            progress=lambda _: None)
    assert summaries and all(s.success for s in summaries)
    runner = CliRunner()
    listed = runner.invoke(main, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    versions = {row["version"]: row for row in json.loads(listed.stdout)}
    assert set(versions) == {1, 2}
    assert [v for v, row in versions.items() if row["latest"]] == [2]
    assert all(row["has_index"] and row["n_train"] > 0 and row["mlflow_run_id"] for row in versions.values())
    assert versions[2]["ndcg_at_10_release"] is not None
    from aion_assets.search.artifacts import load_heads_from_lake
    from aion_assets.search.heads import HeadsEnsemble

    ensemble = load_heads_from_lake(_warehouse().lake, 2)
    assert isinstance(ensemble, HeadsEnsemble) and ensemble.config.out_dim == 2 * TINY_TRAINING["out_dim"]

    def search(*extra: str):
        return runner.invoke(main, ["search", "a ring galaxy with a prominent ring", "--json", *extra])

    answers = {}
    for version in (1, 2):
        result = search("--model-version", str(version))
        assert result.exit_code == 0, result.output
        answers[version] = json.loads(result.stdout)
        assert len(answers[version]) == 10
    assert json.loads(search().stdout) == answers[2]  # no version: the served one
    assert [r["score"] for r in answers[1]] != [r["score"] for r in answers[2]]  # two sets of heads
    unknown = search("--model-version", "9")
    assert unknown.exit_code == 1 and "not in the lake" in unknown.output

    assert "would remove version(s) 1" in runner.invoke(main, ["prune", "--keep", "1", "--dry-run"]).output
    assert search("--model-version", "1").exit_code == 0  # a dry run removes nothing
    # A version MLflow marks as production is never pruned, even beyond --keep.
    from mlflow.tracking import MlflowClient

    from aion_assets.platform.settings import get_settings

    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    client.set_registered_model_alias("aion-search-heads", "production", "1")
    assert "nothing to prune" in runner.invoke(main, ["prune", "--keep", "1"]).output
    assert next(row for row in json.loads(runner.invoke(main, ["models", "--json"]).stdout)
                if row["version"] == 1)["production"]
    client.delete_registered_model_alias("aion-search-heads", "production")
    pruned = runner.invoke(main, ["prune", "--keep", "1"])
    assert pruned.exit_code == 0 and "removed version 1" in pruned.output
    assert search("--model-version", "1").exit_code == 1
    assert json.loads(search().stdout) == answers[2]
    assert "nothing to prune" in runner.invoke(main, ["prune", "--keep", "1"]).output


def test_changed_describer_marks_descriptions_then_what_reads_them(chain, tmp_path: Path,
                                                                   shared_data: Path) -> None:
    """Runs last in this module: it re-materializes vlm_descriptions with other answers."""
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize

    instance = chain["instance"]
    answers = tmp_path / "recorded_v2.jsonl"
    answers.write_text((shared_data / "descriptions" / "recorded_descriptions.jsonl").read_text()
                       .replace("spiral", "spiral-armed"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AION_RECORDED_DESCRIPTIONS", str(answers))
        assert _stale_keys(instance, build_definitions()) == {"vlm_descriptions"}
        summaries = materialize(build_definitions(), "key:vlm_descriptions", instance, progress=lambda _: None)
        assert all(s.success for s in summaries)
        # New answers, new data version: what reads the descriptions is now marked, nothing else.
        assert _stale_keys(instance, build_definitions()) == {"text_embeddings", "description_costs"}


def test_search_ablations_measure_each_choice_over_seeds_on_every_pool(chain) -> None:
    import mlflow

    from aion_assets.definitions import build_definitions
    from aion_assets.platform.settings import get_settings
    from aion_assets.runner import materialize

    tiny = {"seeds": [0, 1], "epochs": 3, "variants": ["ensemble=on", "orientation=train", "text=views"]}
    summaries = materialize(build_definitions(), "key:search_ablations", chain["instance"],
                            op_config={"search_ablations": tiny}, progress=lambda _: None)
    assert summaries and all(s.success for s in summaries)
    warehouse = _warehouse()
    table = warehouse.query("SELECT * FROM search_ablations")
    assert set(table["variant"]) == {"baseline", "ensemble=on", "orientation=train", "text=views"}
    text = table.filter(pl.col("method") == "text_search")
    assert {"release", "survey", "leave_one_release_out"} <= set(text["pool"])
    # two seeds: two replicates each (a two-seed ensemble's leave-one-out subsets are the two single seeds)
    assert set(text.filter(pl.col("target") != "-")["replicates"]) == {2}
    assert table.filter(pl.col("method") == "image_similarity")["replicates"].eq(1).all()
    assert (table["std"] >= 0).all() and table.filter(pl.col("metric") == "ndcg@10")["mean"].is_between(0, 1).all()
    # the served choices' leave-one-release-out figures join eval_results, without a registered version
    loro = warehouse.query("SELECT * FROM eval_results WHERE pool = 'leave_one_release_out'")
    assert set(loro["method"]) == {"text_search", "image_similarity"} and loro["model_version"].is_null().all()
    assert {"mergers", "rings"} <= set(loro["target"])
    # the embeddings only the ablation needs were computed into the lake, once
    lake = warehouse.lake
    assert list(lake.iter_files("embeddings/image_base/efficientnet-lite0-fp32-d8/*/*.npy"))
    mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)
    runs = mlflow.search_runs(experiment_names=["aion-search-ablations"], output_format="list")
    held_out = {r.data.tags.get("held_out_release") for r in runs} - {None}
    assert held_out == {"gz1-sdss", "gz-decals-rings"}
    assert all(r.data.tags.get("evaluation") in ("ablation", "leave_one_release_out") for r in runs)
