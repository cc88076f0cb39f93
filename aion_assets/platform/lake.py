"""The lake: Parquet tables and array files under one root, a local folder or an fsspec URL (``s3://...``).

Writes are atomic (written beside the target, then moved into place) so a failed run leaves the previous
version intact and readers never see half a file.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: opening the lake for a query needs none of them
    import fsspec
    import numpy as np
    import polars as pl


@dataclass(frozen=True)
class ObjectStore:
    """How to reach an ``s3://`` lake: endpoint (empty: AWS itself), credentials (None: the SDK's own chain)."""

    endpoint_url: str = ""
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"

    def fsspec_options(self) -> dict[str, Any]:
        """s3fs's storage options. No listing cache: other pods write the lake all the time, and a cached listing
        names files (and ETags) they have since replaced, which then fail to open."""
        options: dict[str, Any] = {"client_kwargs": {"region_name": self.region}, "use_listings_cache": False}
        if self.endpoint_url:
            options["client_kwargs"]["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            options["key"], options["secret"] = self.access_key_id, self.secret_access_key
        return options

    def duckdb_secret_sql(self) -> str:
        """A DuckDB ``CREATE SECRET`` for the httpfs extension, so views over ``s3://`` Parquet read this store."""
        def quoted(value: str) -> str:
            return "'" + value.replace("'", "''") + "'"

        parts = ["TYPE s3", f"REGION {quoted(self.region)}"]
        if self.access_key_id:
            parts += [f"KEY_ID {quoted(self.access_key_id)}", f"SECRET {quoted(self.secret_access_key or '')}"]
        else:
            parts.append("PROVIDER config")
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            parts += [f"ENDPOINT {quoted(host.rstrip('/'))}", "URL_STYLE 'path'",
                      f"USE_SSL {'true' if scheme == 'https' else 'false'}"]
        return f"CREATE OR REPLACE SECRET aion_lake ({', '.join(parts)})"


@dataclass
class Lake:
    root: str
    store: ObjectStore = field(default_factory=ObjectStore)
    _fs: Any = field(default=None, init=False, repr=False)
    _base: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # A local root needs no filesystem object until a file is touched: `aion sql` opens the lake only to
        # name it, and importing fsspec costs a fifth of a second. Same absolute path as fsspec would make.
        if "://" not in self.root:
            path = os.path.expanduser(self.root)
            self._base = (path if path.startswith("/") else f"{os.getcwd()}/{path.removeprefix('./')}").rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            import fsspec

            options = self.store.fsspec_options() if self.root.startswith(("s3://", "s3a://")) else {}
            self._fs, base = fsspec.core.url_to_fs(self.root, **options)
            if self._base is None:
                self._base = base.rstrip("/")
        return self._fs

    @property
    def base(self) -> str:
        if self._base is None:
            _ = self.fs
        return self._base

    @property
    def is_local(self) -> bool:
        if "://" not in self.root:
            return True
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def path(self, *parts: str) -> str:
        """Filesystem path of a lake entry (no protocol)."""
        return posixpath.join(self.base, *parts)

    def url(self, *parts: str) -> str:
        """Full URL of a lake entry: what DuckDB's read_parquet or another process opens."""
        path = self.path(*parts)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(self.path(pattern)))

    def delete(self, *parts: str) -> None:
        target = self.path(*parts)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    def size_bytes(self, *parts: str) -> int:
        return int(self.fs.size(self.path(*parts)))

    def _atomic_write(self, data: bytes, *parts: str) -> str:
        target = self.path(*parts)
        if not self.is_local:
            # An object store's PUT is atomic already (readers see the old object or the new), and its "move" is
            # a copy and a delete: write in place.
            with self.fs.open(target, "wb") as handle:
                handle.write(data)
            return target
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        staging = f"{target}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(staging, "wb") as handle:
            handle.write(data)
        self.fs.mv(staging, target)
        return target

    def write_bytes(self, data: bytes, *parts: str) -> str:
        return self._atomic_write(data, *parts)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open(self.path(*parts), "rb") as handle:
            return handle.read()

    def write_parquet(self, frame: pl.DataFrame, *parts: str) -> str:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        return self._atomic_write(buffer.getvalue(), *parts)

    def read_parquet(self, *parts: str) -> pl.DataFrame:
        import polars as pl

        with self.fs.open(self.path(*parts), "rb") as handle:
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
        prefix = self.base + "/"
        for full in self.glob(pattern):
            yield full[len(prefix):] if full.startswith(prefix) else full
