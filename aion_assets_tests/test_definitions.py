"""The code location loads: in process, through `dagster definitions validate`, and in a running webserver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aion_assets.platform.settings import PROJECT_ROOT, subprocess_env

BIN = Path(sys.executable).parent


def _definitions():
    from aion_assets.definitions import build_definitions

    return build_definitions()


def test_every_asset_has_a_group_and_description(aion_home) -> None:
    graph = _definitions().resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert "raw_cutouts" in keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            assert node.group_name and node.group_name != "default", f"{key} has no group"
            assert node.description, f"{key} has no description"


def test_dagster_definitions_validate(aion_home) -> None:
    from aion_assets.platform.instance import ensure_dagster_home

    ensure_dagster_home(aion_home.dagster_home)  # as `aion` and `make ui` do before Dagster's own CLI runs
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_webserver_lists_the_asset_keys(aion_home) -> None:
    from aion_assets_tests.servers import asset_keys, running_webserver

    with running_webserver() as base_url:
        listed = asset_keys(base_url)
    expected = {key.to_user_string() for key in _definitions().resolve_asset_graph().get_all_asset_keys()}
    assert listed == expected


def test_a_newly_ingested_shard_is_embedded_automatically(aion_home) -> None:
    import dagster as dg

    defs = _definitions()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("release_shards", ["new-release|0000", "old-release|0000"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="raw_cutouts", partition="new-release|0000"))
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = set()
        for result in after.results:
            if not result.true_subset.is_empty:
                partitions = result.true_subset.expensively_compute_partition_keys() or {None}
                requested |= {(result.key.to_user_string(), partition) for partition in partitions}
    assert ("image_base_embeddings", "new-release|0000") in requested
    assert ("image_base_embeddings", "old-release|0000") not in requested
    assert not {key for key, _ in requested} & {"search_index", "image_similarity_index"}
