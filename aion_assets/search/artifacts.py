"""Loading and saving the search chain's artifacts (heads, FAISS indexes) through the lake, local or remote."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ALIGNMENT_CHECKPOINT
from aion_assets.search.heads import AlignmentHeads, load_heads, save_heads
from aion_assets.search.index import VectorIndex


def save_heads_to_lake(lake: Lake, heads: AlignmentHeads, metadata: dict[str, str]) -> tuple[str, Path]:
    """Write the checkpoint into the lake; also return a local copy (for MLflow to log as an artifact)."""
    local = Path(tempfile.mkdtemp(prefix="aion-heads-")) / "heads.safetensors"
    save_heads(heads, local, extra_metadata=metadata)
    return lake.write_bytes(local.read_bytes(), *ALIGNMENT_CHECKPOINT), local


def load_heads_from_lake(lake: Lake, device: str = "cpu") -> AlignmentHeads:
    if not lake.exists(*ALIGNMENT_CHECKPOINT):
        raise FileNotFoundError("no trained heads in the lake: materialize alignment_model first")
    if lake.is_local:
        return load_heads(lake.path(*ALIGNMENT_CHECKPOINT), device=device)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "heads.safetensors"
        local.write_bytes(lake.read_bytes(*ALIGNMENT_CHECKPOINT))
        return load_heads(local, device=device)


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
    if not lake.exists(*parts):
        raise FileNotFoundError(f"no index at {'/'.join(parts)} in the lake: materialize it first")
    if lake.is_local:
        return VectorIndex.load(lake.path(*parts))
    with tempfile.TemporaryDirectory() as folder:
        for relative in lake.iter_files("/".join(parts) + "/*"):
            (Path(folder) / Path(relative).name).write_bytes(lake.read_bytes(relative))
        return VectorIndex.load(folder)
