"""The search chain's versioned artifacts in the lake: heads (with their training set), FAISS indexes (the served
ones, and the trained index and per-partition shards they are merged from) and the pointer that names the served
version.

Versions live side by side (``models/alignment/v3/``, ``embeddings/search/v3/``, ``indexes/search/v3/``): training
a new model never overwrites or breaks the one being served. ``models/alignment/latest.json`` names the served
version; it is written atomically, and only after everything it names exists.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import (
    LATEST_POINTER,
    MODELS_DIR,
    ShardKey,
    artefact_model_path,
    heads_checkpoint_path,
    model_version_dirs,
    search_index_build_dir,
    search_index_dir,
    training_set_path,
    versions_holding,
)
from aion_assets.search.artefacts import ArtefactModel
from aion_assets.search.heads import AlignmentHeads, load_heads, read_heads_metadata, save_heads
from aion_assets.search.index import VectorIndex
from aion_assets.search.sharded_index import index_fingerprint, index_from_bytes, index_to_bytes

TRAINING_SET_SCHEMA = {"release": pl.String, "object_id": pl.String, "sha256": pl.String, "split": pl.String}


class ModelVersionMissing(FileNotFoundError):
    """A heads version (or the served pointer) that the lake does not hold; the message says what to run."""


@contextlib.contextmanager
def _local_copy(lake: Lake, parts: tuple[str, ...], missing: str, folder: bool = False) -> Iterator[Path]:
    """A local path for a lake file (or folder): itself on a local lake, else a temporary copy, since
    safetensors and faiss read from paths, not streams."""
    if not lake.exists(*parts):
        raise ModelVersionMissing(missing)
    if lake.is_local:
        yield Path(lake.path(*parts))
        return
    with tempfile.TemporaryDirectory() as scratch:
        if folder:
            for relative in lake.iter_files("/".join(parts) + "/*"):
                (Path(scratch) / Path(relative).name).write_bytes(lake.read_bytes(relative))
            yield Path(scratch)
        else:
            local = Path(scratch) / parts[-1]
            local.write_bytes(lake.read_bytes(*parts))
            yield local


def _no_heads(model_version: int) -> str:
    return f"no trained heads for model version {model_version} in the lake: see `aion models`"


# -- heads and their training set -----------------------------------------------------------------------------
def save_heads_to_lake(lake: Lake, model_version: int, heads: AlignmentHeads, metadata: dict[str, str],
                       training_set: pl.DataFrame) -> str:
    """Write one version's checkpoint and training set into its own folder; returns the checkpoint's path.

    The training set is written first: a checkpoint in the lake always has the objects it must never be
    evaluated on beside it."""
    lake.write_parquet(training_set.select(list(TRAINING_SET_SCHEMA)).cast(TRAINING_SET_SCHEMA),
                       *training_set_path(model_version))
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "heads.safetensors"
        save_heads(heads, local, extra_metadata=metadata)
        return lake.write_bytes(local.read_bytes(), *heads_checkpoint_path(model_version))


def load_heads_from_lake(lake: Lake, model_version: int, device: str = "cpu") -> AlignmentHeads:
    with _local_copy(lake, heads_checkpoint_path(model_version), _no_heads(model_version)) as path:
        return load_heads(path, device=device)


def heads_metadata_from_lake(lake: Lake, model_version: int) -> dict[str, str]:
    """The checkpoint's header metadata (its MLflow run id, encoders, input data versions)."""
    with _local_copy(lake, heads_checkpoint_path(model_version), _no_heads(model_version)) as path:
        return read_heads_metadata(path)


def save_artefact_model(lake: Lake, model_version: int, model: ArtefactModel) -> str:
    """The version's artefact classifier (arrays in an .npz, its held-out metrics in the same file)."""
    buffer = io.BytesIO()
    np.savez(buffer, **model.to_arrays(), metrics=np.array(json.dumps(model.metrics)))
    return lake.write_bytes(buffer.getvalue(), *artefact_model_path(model_version))


def load_artefact_model(lake: Lake, model_version: int) -> ArtefactModel | None:
    """The version's artefact classifier; None for a version trained without one (too few artefact
    descriptions, or trained before artefact scores existed)."""
    parts = artefact_model_path(model_version)
    if not lake.exists(*parts):
        return None
    with np.load(io.BytesIO(lake.read_bytes(*parts))) as arrays:
        return ArtefactModel.from_arrays(dict(arrays), json.loads(str(arrays["metrics"])))


def load_training_set(lake: Lake, model_version: int) -> pl.DataFrame:
    parts = training_set_path(model_version)
    if not lake.exists(*parts):
        raise ModelVersionMissing(f"model version {model_version} has no training set in the lake: retrain it "
                                  "(its evaluation cannot exclude what it was trained on)")
    return lake.read_parquet(*parts)


# -- versions and the served pointer --------------------------------------------------------------------------
def trained_versions(lake: Lake) -> list[int]:
    """Every heads version with a checkpoint in the lake, ascending."""
    return versions_holding(lake, MODELS_DIR, "heads.safetensors")


def newest_trained_version(lake: Lake) -> int:
    versions = trained_versions(lake)
    if not versions:
        raise ModelVersionMissing("no trained heads in the lake: materialize alignment_model first")
    return versions[-1]


@dataclass(frozen=True)
class ServedVersion:
    version: int
    mlflow_run_id: str
    written_at: str


def write_latest_pointer(lake: Lake, model_version: int, mlflow_run_id: str) -> ServedVersion:
    """Name ``model_version`` as the served one; refuses unless its heads and index are in the lake."""
    for parts in (heads_checkpoint_path(model_version), search_index_dir(model_version)):
        if not lake.exists(*parts):
            raise ModelVersionMissing(f"cannot serve model version {model_version}: {'/'.join(parts)} is missing")
    served = ServedVersion(model_version, mlflow_run_id, datetime.now(timezone.utc).isoformat())
    lake.write_bytes(json.dumps(asdict(served)).encode(), *LATEST_POINTER)
    return served


def read_latest_pointer(lake: Lake) -> ServedVersion:
    if not lake.exists(*LATEST_POINTER):
        raise ModelVersionMissing("no served model version yet: materialize alignment_model and search_index "
                                  "(or run `aion demo`)")
    return ServedVersion(**json.loads(lake.read_bytes(*LATEST_POINTER)))


def resolve_version(lake: Lake, model_version: int | None) -> int:
    """The version a reader asked for, or the served one; a version the lake does not hold is an error."""
    if model_version is None:
        return read_latest_pointer(lake).version
    if model_version not in trained_versions(lake):
        held = ", ".join(map(str, trained_versions(lake))) or "none"
        raise ModelVersionMissing(f"model version {model_version} is not in the lake (held: {held})")
    return int(model_version)


def delete_version(lake: Lake, model_version: int) -> list[str]:
    """Remove one version's lake folders; returns those that existed."""
    removed = []
    for parts in model_version_dirs(model_version):
        if lake.exists(*parts):
            lake.delete(*parts)
            removed.append("/".join(parts))
    return removed


# -- indexes --------------------------------------------------------------------------------------------------
# An index folder holds immutable builds and a pointer: each save writes ``builds/<id>/`` (index.faiss, ids.parquet,
# index.json) and then ``current.json`` naming it, so a reader never pairs one build's index with another's ids
# (an object store has no atomic folder rename), and a re-merge (a new shard) lands beside the build being
# served. The build before the current one is kept for readers that read the pointer a moment ago.
INDEX_BUILDS = "builds"
CURRENT_BUILD = "current.json"


def index_build(lake: Lake, parts: tuple[str, ...]) -> str | None:
    """The id of the build ``parts/current.json`` names (None: no pointer, as in folders written before builds)."""
    if not lake.exists(*parts, CURRENT_BUILD):
        return None
    return str(json.loads(lake.read_bytes(*parts, CURRENT_BUILD))["build"])


def save_index_to_lake(lake: Lake, index: VectorIndex, parts: tuple[str, ...]) -> int:
    """Save an index as a new build of the folder ``parts``, then point the folder at it; returns its bytes."""
    previous = index_build(lake, parts)
    build = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        total = 0
        for file in sorted(Path(folder).iterdir()):
            lake.write_bytes(file.read_bytes(), *parts, INDEX_BUILDS, build, file.name)
            total += file.stat().st_size
    pointer = {"build": build, "written_at": datetime.now(timezone.utc).isoformat(), "ntotal": index.ntotal}
    lake.write_bytes(json.dumps(pointer).encode(), *parts, CURRENT_BUILD)
    for relative in lake.iter_files("/".join((*parts, INDEX_BUILDS, "*"))):
        if relative.rsplit("/", 1)[-1] not in (build, previous):
            lake.delete(relative)
    return total


def load_index_from_lake(lake: Lake, parts: tuple[str, ...]) -> VectorIndex:
    missing = f"no index at {'/'.join(parts)} in the lake: materialize it first"
    build = index_build(lake, parts)
    folder = parts if build is None else (*parts, INDEX_BUILDS, build)
    with _local_copy(lake, folder, missing, folder=True) as path:
        return VectorIndex.load(path)


# -- the search index built per partition ---------------------------------------------------------------------
# A trained, empty index per version (``search_index_quantizer``), one shard per partition filled from it
# (``search_index_shards``), merged into the served index in ``search_index_dir`` (``search_index``). They live
# beside the served index's folder, not in it: readers take that folder's existence for the index's (the served
# pointer, `aion models`, the app), and a version's first shards land long before its merged index does.
TRAINED_INDEX = "trained.faiss"
TRAINED_META = "trained.json"


class IndexShardMissing(FileNotFoundError):
    """A partition with no shard, or a version with no trained index; the message says what to materialize."""


def trained_index_path(model_version: int) -> tuple[str, ...]:
    return (*search_index_build_dir(model_version), TRAINED_INDEX)


def index_shard_path(model_version: int, partition_key: "str | ShardKey", suffix: str) -> tuple[str, ...]:
    """One partition's shard: ``.faiss`` (the index, local rows 0..n-1), ``.parquet`` (release, object_id of each
    row, in row order) and ``.json`` (what it was filled from), written in that order."""
    key = ShardKey.parse(partition_key)
    return (*search_index_build_dir(model_version), "shards", key.release, f"{key.shard}{suffix}")


def save_trained_index(lake: Lake, model_version: int, index: faiss.Index, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the trained index, then its description (kind, params, ...) with the index file's fingerprint; returns
    the description. The description is written last: a reader that finds it finds the index it describes."""
    data = index_to_bytes(index)
    written = {**meta, "model_version": model_version, "fingerprint": index_fingerprint(data),
               "written_at": datetime.now(timezone.utc).isoformat()}
    lake.write_bytes(data, *trained_index_path(model_version))
    lake.write_bytes(json.dumps(written, indent=2).encode(), *search_index_build_dir(model_version), TRAINED_META)
    return written


def read_trained_meta(lake: Lake, model_version: int) -> dict[str, Any] | None:
    parts = (*search_index_build_dir(model_version), TRAINED_META)
    return json.loads(lake.read_bytes(*parts)) if lake.exists(*parts) else None


def load_trained_index(lake: Lake, model_version: int) -> tuple[faiss.Index, dict[str, Any]]:
    """The trained, empty index of a version and its description; the fingerprint is of the bytes read, so a
    shard records exactly what it was filled from even while the index is being retrained."""
    meta = read_trained_meta(lake, model_version)
    if meta is None:
        raise IndexShardMissing(f"model version {model_version} has no trained index: materialize "
                                "search_index_quantizer first")
    data = lake.read_bytes(*trained_index_path(model_version))
    return index_from_bytes(data), {**meta, "fingerprint": index_fingerprint(data)}


def save_index_shard(lake: Lake, model_version: int, partition_key: str, shard: faiss.Index, ids: pl.DataFrame,
                     meta: dict[str, Any]) -> str:
    """Write one partition's shard; the ``.json`` last, so a shard with a description is whole. Returns the
    index file's path."""
    if ids.height != shard.ntotal:
        raise ValueError(f"{partition_key}: {ids.height} ids for a shard of {shard.ntotal} vectors")
    path = lake.write_bytes(index_to_bytes(shard), *index_shard_path(model_version, partition_key, ".faiss"))
    lake.write_parquet(ids.select("release", "object_id"), *index_shard_path(model_version, partition_key, ".parquet"))
    described = {**meta, "partition": partition_key, "vectors": int(shard.ntotal)}
    lake.write_bytes(json.dumps(described).encode(), *index_shard_path(model_version, partition_key, ".json"))
    return path


def read_shard_meta(lake: Lake, model_version: int, partition_key: str) -> dict[str, Any] | None:
    parts = index_shard_path(model_version, partition_key, ".json")
    return json.loads(lake.read_bytes(*parts)) if lake.exists(*parts) else None


def load_shard_ids(lake: Lake, model_version: int, partition_key: str) -> pl.DataFrame:
    return lake.read_parquet(*index_shard_path(model_version, partition_key, ".parquet"))


def load_index_shard(lake: Lake, model_version: int, partition_key: str) -> faiss.Index:
    return index_from_bytes(lake.read_bytes(*index_shard_path(model_version, partition_key, ".faiss")))


def shard_partitions(lake: Lake, model_version: int) -> list[str]:
    """Every partition with a whole shard of this version, whether or not the cutouts table still holds it."""
    folder = "/".join((*search_index_build_dir(model_version), "shards"))
    keys = []
    for relative in lake.iter_files(f"{folder}/*/*.json"):
        release, name = relative.split("/")[-2:]
        keys.append(str(ShardKey(release, name.removesuffix(".json"))))
    return sorted(keys)
