"""A small real stack for the app's tests: ingested subsets of two releases (one with sky coordinates), recorded
descriptions, tiny heads, the indexes and an evaluation, made by the same runner as `aion demo`; then `aion serve`
over it as a child process."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from aion_assets_tests.subsets import copy_subset

TINY_TRAINING = {"seeds": [0], "epochs": 4, "batch_size": 32, "hidden_dim": 128, "out_dim": 64}
STACK_VARIABLES = ("DAGSTER_HOME", "AION_LAKE_ROOT", "AION_WAREHOUSE", "MLFLOW_TRACKING_URI", "AION_MLFLOW_ARTIFACTS",
                   "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AION_DESCRIBER")


def build_stack(root: Path, sample_releases: Path, shared_data: Path) -> tuple[pytest.MonkeyPatch, object]:
    """Materialize the demo selection over the subsets; returns the environment patch (undo it when done) and
    the Dagster instance. Version 1 of the heads is served."""
    recorded = [json.loads(line) for line in (shared_data / "descriptions" / "recorded_descriptions.jsonl").open()]
    described = {r["object_id"] for r in recorded if r["release"] == "gz1-sdss"}
    gz1 = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", infer_schema_length=0)
    keep = set(gz1.filter(pl.col("object_id").is_in(list(described)))["object_id"].head(70).to_list())
    for cls, n in (("merger", 8), ("spiral_clockwise", 10), ("edge_on", 10), ("elliptical", 10)):
        keep |= set(gz1.filter((pl.col("gz1_class") == cls) & ~pl.col("object_id").is_in(list(keep)))["object_id"]
                    .head(n).to_list())
    releases = root / "releases"
    copy_subset(sample_releases / "gz1-sdss", releases / "gz1-sdss", sorted(keep))
    rings = pl.read_csv(sample_releases / "gz-decals-rings" / "catalog.csv", infer_schema_length=0)["object_id"]
    copy_subset(sample_releases / "gz-decals-rings", releases / "gz-decals-rings", rings.head(40).to_list())

    patch = pytest.MonkeyPatch()
    for variable in STACK_VARIABLES:
        patch.delenv(variable, raising=False)
    patch.setenv("AION_HOME", str(root / "aion"))
    patch.setenv("AION_RELEASES_DIR", str(releases))

    from aion_assets.cli import DEMO_SELECTION
    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize, stack_instance

    instance = stack_instance()
    register_release_partitions(instance)
    summaries = materialize(build_definitions(), DEMO_SELECTION, instance,
                            op_config={"alignment_model": TINY_TRAINING}, progress=lambda line: None)
    assert summaries and all(s.success for s in summaries), [s for s in summaries if not s.success]
    return patch, instance


def land_new_version(instance, seed: int) -> None:
    """Train and index another heads version (a different seed), as a scheduled refresh would."""
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize

    summaries = materialize(build_definitions(), "key:alignment_model+", instance,
                            op_config={"alignment_model": {**TINY_TRAINING, "seeds": [seed]}},
                            progress=lambda line: None)
    assert summaries and all(s.success for s in summaries)
