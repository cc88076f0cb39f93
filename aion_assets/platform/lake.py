"""The lake: Parquet tables and array files under one root, a local folder or an fsspec URL.

Writes are atomic (written beside the target, then moved into place) so a failed run leaves the previous
version intact and readers never see half a file.
"""

from __future__ import annotations

import io
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import fsspec

if TYPE_CHECKING:  # imported where used: opening the lake for a query needs neither
    import numpy as np
    import polars as pl


@dataclass
class Lake:
    root: str
    _fs: fsspec.AbstractFileSystem = field(init=False, repr=False)
    _base: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._fs, self._base = fsspec.core.url_to_fs(self.root)
        self._base = self._base.rstrip("/")

    @property
    def is_local(self) -> bool:
        return "file" in (self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,))

    def path(self, *parts: str) -> str:
        """Filesystem path of a lake entry (no protocol)."""
        return posixpath.join(self._base, *parts)

    def url(self, *parts: str) -> str:
        """Full URL of a lake entry: what DuckDB's read_parquet or another process opens."""
        path = self.path(*parts)
        return path if self.is_local else self._fs.unstrip_protocol(path)

    def exists(self, *parts: str) -> bool:
        return self._fs.exists(self.path(*parts))

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._fs.glob(self.path(pattern)))

    def delete(self, *parts: str) -> None:
        target = self.path(*parts)
        if self._fs.exists(target):
            self._fs.rm(target, recursive=True)

    def size_bytes(self, *parts: str) -> int:
        return int(self._fs.size(self.path(*parts)))

    def _atomic_write(self, data: bytes, *parts: str) -> str:
        target = self.path(*parts)
        self._fs.makedirs(posixpath.dirname(target), exist_ok=True)
        staging = f"{target}.tmp-{uuid.uuid4().hex}"
        with self._fs.open(staging, "wb") as handle:
            handle.write(data)
        self._fs.mv(staging, target)
        return target

    def write_bytes(self, data: bytes, *parts: str) -> str:
        return self._atomic_write(data, *parts)

    def read_bytes(self, *parts: str) -> bytes:
        with self._fs.open(self.path(*parts), "rb") as handle:
            return handle.read()

    def write_parquet(self, frame: pl.DataFrame, *parts: str) -> str:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        return self._atomic_write(buffer.getvalue(), *parts)

    def read_parquet(self, *parts: str) -> pl.DataFrame:
        import polars as pl

        with self._fs.open(self.path(*parts), "rb") as handle:
            return pl.read_parquet(handle)

    def write_array(self, array: np.ndarray, *parts: str) -> str:
        """Arrays are NPY files: memory-mappable locally, one read from an object store."""
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        return self._atomic_write(buffer.getvalue(), *parts)

    def read_array(self, *parts: str, mmap: bool = False) -> np.ndarray:
        import numpy as np

        if mmap and self.is_local:
            return np.load(self.path(*parts), mmap_mode="r", allow_pickle=False)
        return np.load(io.BytesIO(self.read_bytes(*parts)), allow_pickle=False)

    def iter_files(self, pattern: str) -> Iterator[str]:
        """Lake-relative paths matching a glob pattern."""
        prefix = self._base + "/"
        for full in self.glob(pattern):
            yield full[len(prefix):] if full.startswith(prefix) else full
