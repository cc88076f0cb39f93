"""The search index built per partition through the asset graph, on a tiny real stack and with the same runner as
`aion demo`: a quantizer trained once, a shard per partition, a merge in the cutouts table's order; a release that
lands later joins at the next merge without retraining, a retired one is left out, a retraining is refused by the
merge until the shards are refilled from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from aion_assets_tests.app_stack import TINY_TRAINING
from aion_assets_tests.subsets import copy_subset

LATER_RELEASE = "gz-decals-rings"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sample_releases: Path, shared_data: Path):
    """gz1-sdss (described objects, so the heads train) in several partitions, indexed up to search_index; the
    rings release is copied aside, to land later."""
    root = tmp_path_factory.mktemp("sharded_index")
    recorded = [json.loads(line) for line in (shared_data / "descriptions" / "recorded_descriptions.jsonl").open()]
    described = {r["object_id"] for r in recorded if r["release"] == "gz1-sdss"}
    gz1 = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", infer_schema_length=0)
    keep = set(gz1.filter(pl.col("object_id").is_in(list(described)))["object_id"].head(70).to_list())
    keep |= set(gz1.filter(~pl.col("object_id").is_in(list(keep)))["object_id"].head(30).to_list())
    releases = root / "releases"
    copy_subset(sample_releases / "gz1-sdss", releases / "gz1-sdss", sorted(keep))
    rings = pl.read_csv(sample_releases / LATER_RELEASE / "catalog.csv", infer_schema_length=0)["object_id"]
    copy_subset(sample_releases / LATER_RELEASE, root / "later" / LATER_RELEASE, rings.head(30).to_list())

    mp = pytest.MonkeyPatch()
    for variable in ("DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI",
                     "AION_MLFLOW_ARTIFACTS", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AION_DESCRIBER"):
        mp.delenv(variable, raising=False)
    mp.setenv("AION_HOME", str(root / "aion"))
    mp.setenv("AION_RELEASES_DIR", str(releases))
    mp.setenv("AION_SHARD_SIZE", "40")  # several partitions per release

    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.runner import stack_instance

    instance = stack_instance()
    register_release_partitions(instance)
    summaries = _run("+key:search_index", instance, op_config={"alignment_model": TINY_TRAINING})
    assert {"search_index_quantizer", "search_index_shards", "search_index"} <= {a for s in summaries
                                                                                  for a in s.assets}
    yield {"instance": instance, "root": root, "releases": releases}
    mp.undo()


def _run(selection: str, instance, expect_success: bool = True, **kwargs):
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize

    summaries = materialize(build_definitions(), selection, instance, progress=lambda line: None, **kwargs)
    assert summaries
    if expect_success:
        assert all(s.success for s in summaries), [s for s in summaries if not s.success]
    return summaries


def _lake():
    from aion_assets.platform.warehouse import stack_warehouse

    return stack_warehouse().lake


def _cutout_ids() -> pl.DataFrame:
    from aion_assets.platform.warehouse import stack_warehouse

    return stack_warehouse().query("SELECT release, object_id FROM cutouts ORDER BY release, shard, row")


def _served():
    from aion_assets.platform.layout import search_index_dir
    from aion_assets.search.artifacts import load_index_from_lake, read_latest_pointer

    lake = _lake()
    return load_index_from_lake(lake, search_index_dir(read_latest_pointer(lake).version))


def _metadata(instance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def _partitions(instance, release: str) -> list[str]:
    return sorted(key for key in instance.get_dynamic_partitions("release_shards") if key.startswith(f"{release}|"))


def _every_vector_finds_itself(index) -> None:
    from aion_assets.platform.layout import search_embeddings_path
    from aion_assets.platform.warehouse import stack_warehouse
    from aion_assets.search.artifacts import read_latest_pointer
    from aion_assets.search.vectors import gather_vectors

    warehouse = stack_warehouse()
    version = read_latest_pointer(warehouse.lake).version
    rows = warehouse.query("SELECT release, shard, row, object_id FROM cutouts ORDER BY release, shard, row")
    _, vectors = gather_vectors(warehouse.lake, rows, lambda key: search_embeddings_path(version, key))
    # at the k the search settings were tuned for (a tiny stack's IVF-PQ codes are 1-bit: fewer candidates than
    # k_factor * 100 may miss a vector's own row before the exact re-ranking)
    k = min(100, len(vectors))
    assert np.array_equal(index.search(vectors, k)[1][:, 0], np.arange(len(vectors)))


def test_the_merged_id_map_is_the_cutouts_table_in_order(stack) -> None:
    from aion_assets.search.artifacts import read_trained_meta, shard_partitions

    instance = stack["instance"]
    index = _served()
    cutouts = _cutout_ids()
    assert index.kind == "flat" and index.ntotal == cutouts.height
    assert index.ids.select("release", "object_id").equals(cutouts)
    _every_vector_finds_itself(index)
    partitions = _partitions(instance, "gz1-sdss")
    # each row's artefact score, when the version has an artefact model, is its partition's, in row order
    from aion_assets.platform.layout import artefact_scores_path
    from aion_assets.search.artifacts import load_artefact_model

    if load_artefact_model(_lake(), 1) is not None:
        scores = np.concatenate([_lake().read_array(*artefact_scores_path(1, p)) for p in partitions])
        assert np.array_equal(index.ids["artefact_score"].to_numpy(), scores)
    else:
        assert "artefact_score" not in index.ids.columns
    assert len(partitions) == 3 and shard_partitions(_lake(), 1) == partitions
    merged = _metadata(instance, "search_index")
    assert merged["shards"] == 3 and merged["vectors"] == cutouts.height and merged["recall_at_100"] == 1.0
    assert {"dim", "index_type", "build_seconds", "bytes", "path", "model_version", "served_since"} <= set(merged)
    trained = read_trained_meta(_lake(), 1)
    assert trained["kind"] == "flat" and trained["vectors_held"] == cutouts.height


def test_a_release_landing_later_joins_at_the_next_merge_without_retraining(stack) -> None:
    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.definitions import build_definitions
    from aion_assets.search.artifacts import trained_index_path

    instance = stack["instance"]
    trained_file = Path(_lake().path(*trained_index_path(1)))
    before = (trained_file.read_bytes(), trained_file.stat().st_mtime_ns)
    quantized = instance.get_latest_materialization_event(dg.AssetKey("search_index_quantizer")).run_id
    defs = build_definitions()
    first_tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    shutil.copytree(stack["root"] / "later" / LATER_RELEASE, stack["releases"] / LATER_RELEASE)
    register_release_partitions(instance)
    new_partitions = _partitions(instance, LATER_RELEASE)
    assert new_partitions
    _run("key:raw_cutouts or key:image_base_embeddings or key:search_embeddings or key:search_index_shards",
         instance, partition_keys=new_partitions)

    # the daemon's view: the new shard asks for a merge, not for a retraining that would void every shard
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first_tick.cursor)
    requested = {result.key.to_user_string() for result in tick.results if not result.true_subset.is_empty}
    assert "search_index" in requested and "search_index_quantizer" not in requested

    _run("key:search_index", instance)
    index = _served()
    cutouts = _cutout_ids()
    assert set(cutouts["release"]) == {"gz1-sdss", LATER_RELEASE}
    assert index.ids.select("release", "object_id").equals(cutouts)
    _every_vector_finds_itself(index)
    assert _metadata(instance, "search_index")["shards"] == 3 + len(new_partitions)
    assert (trained_file.read_bytes(), trained_file.stat().st_mtime_ns) == before
    assert instance.get_latest_materialization_event(dg.AssetKey("search_index_quantizer")).run_id == quantized


def test_a_retired_release_is_left_out_of_the_merge(stack) -> None:
    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.search.artifacts import shard_partitions

    instance = stack["instance"]
    retired = _partitions(instance, LATER_RELEASE)
    shutil.rmtree(stack["releases"] / LATER_RELEASE)
    assert set(retired) <= set(shard_partitions(_lake(), 1))
    register_release_partitions(instance)  # retires the vanished release: its rows leave the cutouts table
    # ...and its shards leave the build folder with its other lake files, kept under retired/
    assert not set(retired) & set(shard_partitions(_lake(), 1))
    assert any(f"/indexes/search_build/v1/shards/{LATER_RELEASE}/" in path for path in _lake().glob("retired/**"))

    _run("key:search_index", instance)
    index = _served()
    assert set(index.ids["release"]) == {"gz1-sdss"} and index.ids.select("release", "object_id").equals(_cutout_ids())


def test_a_retrained_quantizer_is_refused_by_the_merge_until_the_shards_are_refilled(stack) -> None:
    instance = stack["instance"]
    _run("key:search_index_quantizer", instance, op_config={"search_index_quantizer": {"kind": "ivfpq"}})
    refused = _run("key:search_index", instance, expect_success=False)
    assert not refused[-1].success
    failures = instance.all_logs(refused[-1].run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    message = failures[0].dagster_event.step_failure_data.error.message
    assert "filled from another trained index" in message and "search_index_shards" in message
    assert _served().kind == "flat"  # the served index is untouched

    _run("key:search_index_shards", instance)
    _run("key:search_index", instance)
    index = _served()
    assert index.kind == "ivfpq" and index.params["spec"].endswith(",RFlat")
    assert index.ids.select("release", "object_id").equals(_cutout_ids())
    _every_vector_finds_itself(index)  # the exact re-ranking puts each vector's own row first
    assert _metadata(instance, "search_index")["recall_at_100"] >= 0.95


def test_one_run_over_a_range_of_partitions_embeds_each_as_its_own_run_would(stack) -> None:
    """When shards land together the daemon launches one run over several of them (shard_backfill_policy): every
    partition of the range is embedded and written, as runs of their own wrote them."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from aion_assets.definitions import build_definitions
    from aion_assets.platform.layout import image_base_embeddings_path, search_embeddings_path

    instance = stack["instance"]
    partitions = _partitions(instance, "gz1-sdss")
    assert len(partitions) >= 3
    encoder_id = _metadata(instance, "image_base_embeddings")["artifact_id"]
    lake = _lake()
    paths = [path for partition in partitions for path in (image_base_embeddings_path(encoder_id, partition),
                                                           search_embeddings_path(1, partition))]
    before = [lake.read_array(*path) for path in paths]
    for path in paths:
        lake.delete(*path)
    job = build_definitions().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("image_base_embeddings"), dg.AssetKey("search_embeddings")],
        tags={ASSET_PARTITION_RANGE_START_TAG: partitions[0], ASSET_PARTITION_RANGE_END_TAG: partitions[-1]})
    assert result.success
    for path, vectors in zip(paths, before, strict=True):
        assert np.allclose(lake.read_array(*path), vectors, atol=1e-5), path
    assert _metadata(instance, "image_base_embeddings")["partitions"] == len(partitions)


def _requested(result, instance) -> set[tuple[str, str | None]]:
    from dagster._core.definitions.partitions.context import partition_loading_context

    requested = set()
    with partition_loading_context(dynamic_partitions_store=instance):
        for entry in result.results:
            if entry.true_subset.is_empty:
                continue
            subset = entry.true_subset
            keys = subset.expensively_compute_partition_keys() if subset.is_partitioned else {None}
            requested |= {(entry.key.to_user_string(), key) for key in keys}
    return requested


def test_the_daemon_retrains_on_new_heads_after_their_embeddings_never_on_a_new_partition(aion_home) -> None:
    from aion_assets.definitions import build_definitions

    defs = build_definitions()
    index_assets = {"search_embeddings", "search_index_quantizer", "search_index_shards", "search_index"}
    with dg.DagsterInstance.ephemeral() as instance:
        cursor = None

        def landed(asset: str, *partitions: str) -> None:
            for partition in partitions or (None,):
                instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))

        def tick() -> set[tuple[str, str | None]]:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            return {entry for entry in _requested(result, instance) if entry[0] in index_assets}

        instance.add_dynamic_partitions("release_shards", ["a|0000", "b|0000"])
        landed("image_base_embeddings", "a|0000", "b|0000")
        landed("alignment_model")
        landed("search_embeddings", "a|0000", "b|0000")
        assert tick() == set()  # the first evaluation only takes note
        assert tick() == {("search_index_quantizer", None)}  # missing: trained once
        landed("search_index_quantizer")
        assert tick() == {("search_index_shards", "a|0000"), ("search_index_shards", "b|0000")}
        landed("search_index_shards", "a|0000", "b|0000")
        assert tick() == {("search_index", None)}
        landed("search_index")

        # a new partition: its embeddings and shard (one run), then a merge; no retraining
        instance.add_dynamic_partitions("release_shards", ["c|0000"])
        landed("image_base_embeddings", "c|0000")
        assert tick() == {("search_embeddings", "c|0000"), ("search_index_shards", "c|0000")}
        landed("search_embeddings", "c|0000")
        landed("search_index_shards", "c|0000")
        assert tick() == {("search_index", None)}
        landed("search_index")

        # new heads: their embeddings first (their runs launched on this tick), the retraining once they are in
        landed("alignment_model")
        assert ("search_index_quantizer", None) not in tick()
        assert ("search_index_quantizer", None) not in tick()  # the embeddings' runs were requested a tick ago
        landed("search_embeddings", "a|0000", "b|0000", "c|0000")
        assert ("search_index_quantizer", None) in tick()
