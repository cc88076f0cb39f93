"""The search chain's versioned artifacts in the lake: heads (with their training set), FAISS indexes and the
pointer that names the served version.

Versions live side by side (``models/alignment/v3/``, ``embeddings/search/v3/``, ``indexes/search/v3/``): training
a new model never overwrites or breaks the one being served. ``models/alignment/latest.json`` names the served
version; it is written atomically, and only after everything it names exists.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import (
    LATEST_POINTER,
    MODELS_DIR,
    heads_checkpoint_path,
    model_version_dirs,
    search_index_dir,
    training_set_path,
    versions_holding,
)
from aion_assets.search.heads import AlignmentHeads, load_heads, read_heads_metadata, save_heads
from aion_assets.search.index import VectorIndex

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
def save_index_to_lake(lake: Lake, index: VectorIndex, parts: tuple[str, ...]) -> int:
    """Save an index folder into the lake file by file; returns its size in bytes."""
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        total = 0
        for file in sorted(Path(folder).iterdir()):
            lake.write_bytes(file.read_bytes(), *parts, file.name)
            total += file.stat().st_size
    return total


def load_index_from_lake(lake: Lake, parts: tuple[str, ...]) -> VectorIndex:
    missing = f"no index at {'/'.join(parts)} in the lake: materialize it first"
    with _local_copy(lake, parts, missing, folder=True) as path:
        return VectorIndex.load(path)
