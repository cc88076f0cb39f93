"""DuckDB extensions from their PyPI packages, never from a download at run time.

``duckdb-extension-<name>`` wheels ship ``extensions/v<duckdb version>/<name>.duckdb_extension``. DuckDB takes an
extension file with ``INSTALL '<path>'`` (it reads the file's own name, e.g. ``postgres_scanner`` for the
package ``postgres``), copying it into the connection's extension directory; after that ``LOAD`` and DuckDB's
autoloading find it there. The directory is one per user and DuckDB version, outside the project, so the copy is
made once per machine, not once per connection.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
from pathlib import Path

import duckdb

# What a DuckLake warehouse over an object store needs: its catalog's database driver, the format, S3 reads.
DUCKLAKE_EXTENSIONS = ("httpfs", "postgres", "ducklake")
# The name DuckDB knows each package's extension by, where it differs from the package's.
LOADED_NAME = {"postgres": "postgres_scanner"}


class MissingExtension(RuntimeError):
    """A DuckDB extension whose PyPI package (at this DuckDB's version) is not installed."""


def extension_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"aion-duckdb-extensions-{os.getuid()}" / duckdb.__version__


def extension_file(name: str) -> Path:
    """The extension file the package ``duckdb-extension-<name>`` ships for this DuckDB version."""
    package = f"duckdb_extension_{name}"
    spec = importlib.util.find_spec(package)
    wanted = f"duckdb-extension-{name}=={duckdb.__version__}"
    if spec is None or spec.origin is None:
        raise MissingExtension(f"the DuckDB extension {name!r} is not installed: pip install '{wanted}'")
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise MissingExtension(f"{package} has no build for DuckDB {duckdb.__version__}: pip install '{wanted}'")
    return path


def connection_config() -> dict[str, object]:
    """Config of a connection that may load these extensions: our directory, and no download ever."""
    return {"extension_directory": str(extension_directory()), "autoinstall_known_extensions": False}


@functools.cache
def _installed(name: str) -> None:
    directory = extension_directory()
    directory.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(config=connection_config()) as con:
        con.execute(f"INSTALL '{extension_file(name)}'")


def load_extensions(con: duckdb.DuckDBPyConnection, names: tuple[str, ...] = DUCKLAKE_EXTENSIONS) -> None:
    """Load ``names`` into ``con`` (opened with :func:`connection_config`), installing each from its package."""
    for name in names:
        _installed(name)
        con.execute(f"LOAD {LOADED_NAME.get(name, name)}")
