"""Heads versions in a real lake: side by side, a served pointer that only names what exists, safe pruning."""

from __future__ import annotations

import polars as pl
import pytest

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import (
    encoder_artifact_id,
    heads_artifact_id,
    search_embeddings_path,
    search_index_dir,
)
from aion_assets.search.artifacts import (
    ModelVersionMissing,
    delete_version,
    load_heads_from_lake,
    load_training_set,
    read_latest_pointer,
    resolve_version,
    save_heads_to_lake,
    trained_versions,
    write_latest_pointer,
)
from aion_assets.search.heads import AlignmentHeads
from aion_assets.search.versions import ModelVersionInfo, versions_to_prune

TRAINING_SET = pl.DataFrame({"release": ["r"], "object_id": ["a"], "sha256": ["h"], "split": ["train"]})


def _train_version(lake: Lake, version: int, with_index: bool = True) -> None:
    heads = AlignmentHeads(image_dim=4, text_dim=4, hidden_dim=8, out_dim=4)
    save_heads_to_lake(lake, version, heads, {"mlflow_run_id": f"run-{version}"}, TRAINING_SET)
    lake.write_bytes(b"vectors", *search_embeddings_path(version, "r|0000"))
    if with_index:
        lake.write_bytes(b"index", *search_index_dir(version), "index.faiss")


def test_artifact_ids_come_from_configuration() -> None:
    assert encoder_artifact_id("EfficientNet-Lite0", "fp32") == "efficientnet-lite0-fp32"
    assert encoder_artifact_id("efficientnet-lite0", "bf16") != encoder_artifact_id("efficientnet-lite0", "fp32")
    assert heads_artifact_id(3) == "v3"
    with pytest.raises(ValueError):
        encoder_artifact_id("efficientnet-lite0", "fp8")
    with pytest.raises(ValueError):
        heads_artifact_id(0)


def test_versions_live_side_by_side_and_the_pointer_names_only_what_exists(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ModelVersionMissing, match="no served model version"):
        read_latest_pointer(lake)
    _train_version(lake, 1)
    _train_version(lake, 2, with_index=False)
    assert trained_versions(lake) == [1, 2]
    write_latest_pointer(lake, 1, "run-1")
    with pytest.raises(ModelVersionMissing, match="indexes/search/v2"):
        write_latest_pointer(lake, 2, "run-2")  # its index is not built: v1 stays served
    assert resolve_version(lake, None) == 1
    assert resolve_version(lake, 2) == 2
    with pytest.raises(ModelVersionMissing, match="not in the lake"):
        resolve_version(lake, 7)
    assert load_training_set(lake, 2).equals(TRAINING_SET)
    assert isinstance(load_heads_from_lake(lake, 2), AlignmentHeads)

    removed = delete_version(lake, 2)
    assert removed == ["models/alignment/v2", "embeddings/search/v2"]
    assert trained_versions(lake) == [1] and read_latest_pointer(lake).version == 1


def _info(version: int, latest: bool = False, production: bool = False, in_lake: bool = True) -> ModelVersionInfo:
    return ModelVersionInfo(version=version, mlflow_run_id=f"run-{version}", n_train=10, val_mrr_mean=None,
                            ndcg_at_10_release=None, ndcg_at_10_survey=None, in_lake=in_lake, has_index=True,
                            latest=latest, production=production)


def test_pruning_keeps_the_newest_the_served_and_production() -> None:
    infos = [_info(1, production=True), _info(2), _info(3, latest=True), _info(4), _info(5), _info(6, in_lake=False)]
    # keep the 2 newest held in the lake (5, 4); 3 is served and 1 is production: only 2 goes
    assert versions_to_prune(infos, keep=2) == [2]
    assert versions_to_prune(infos, keep=10) == []
    with pytest.raises(ValueError):
        versions_to_prune(infos, keep=0)
