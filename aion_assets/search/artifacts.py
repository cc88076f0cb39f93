"""Loading and saving the search chain's artifacts (heads, FAISS indexes) through the lake, local or remote."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ALIGNMENT_CHECKPOINT
from aion_assets.search.heads import AlignmentHeads, load_heads, read_heads_metadata, save_heads
from aion_assets.search.index import VectorIndex


@contextlib.contextmanager
def _local_copy(lake: Lake, parts: tuple[str, ...], missing: str, folder: bool = False) -> Iterator[Path]:
    """A local path for a lake file (or folder): itself on a local lake, else a temporary copy, since
    safetensors and faiss read from paths, not streams."""
    if not lake.exists(*parts):
        raise FileNotFoundError(missing)
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


NO_HEADS = "no trained heads in the lake: materialize alignment_model first"


def save_heads_to_lake(lake: Lake, heads: AlignmentHeads, metadata: dict[str, str]) -> tuple[str, Path]:
    """Write the checkpoint into the lake; also return a local copy (for MLflow to log as an artifact)."""
    local = Path(tempfile.mkdtemp(prefix="aion-heads-")) / "heads.safetensors"
    save_heads(heads, local, extra_metadata=metadata)
    return lake.write_bytes(local.read_bytes(), *ALIGNMENT_CHECKPOINT), local


def load_heads_from_lake(lake: Lake, device: str = "cpu") -> AlignmentHeads:
    with _local_copy(lake, ALIGNMENT_CHECKPOINT, NO_HEADS) as path:
        return load_heads(path, device=device)


def heads_metadata_from_lake(lake: Lake) -> dict[str, str]:
    """The checkpoint's header metadata (its MLflow run id, encoders, input data versions)."""
    with _local_copy(lake, ALIGNMENT_CHECKPOINT, NO_HEADS) as path:
        return read_heads_metadata(path)


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
