"""The embedded Dagster instance: a dagster.yaml with sqlite storage, a run queue and concurrency pools."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# Pools named by the design. `gpu`: one accelerator-bound step at a time; `duckdb_writer`: DuckDB allows one
# writing process per file; `vlm_api`: paid API calls, bounded across runs.
POOL_LIMITS = {"gpu": 1, "duckdb_writer": 1, "vlm_api": 1}

DAGSTER_YAML = """\
# Written by aion_assets (platform/instance.py). Embedded default: everything on local disk.
storage:
  sqlite:
    base_dir: {storage}
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    default_limit: 1
telemetry:
  enabled: false
# Runs the UI or the daemon launched: the daemon fails one stuck starting or cancelling, and gives back the pool
# slots a finished run still holds. The CLI's in-process runs are recovered by aion itself (runner.py).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  free_slots_after_run_end_seconds: 30
"""


# The first line of every dagster.yaml this module writes: only such a file is ever rewritten.
WRITTEN_BY = "# Written by aion_assets (platform/instance.py)."
# The sqlite storage folder of a file we wrote (the value may be bare, as older versions wrote it, or quoted).
STORAGE_BASE_DIR = re.compile(r"^(storage:\n  sqlite:\n    base_dir: )(.*)$", re.MULTILINE)


def _storage_value(dagster_home: Path) -> str:
    # A JSON string is a YAML double-quoted scalar: a path with spaces, colons or '#' stays one value.
    return json.dumps(str(dagster_home / "storage"))


def ensure_dagster_home(dagster_home: Path) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml if missing; never overwrite a user's file.

    Dagster needs an absolute storage folder, so a home that was copied or moved still names the old one (it
    would read the old runs and write new ones there): the file we wrote is pointed back into this home.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML.format(storage=_storage_value(dagster_home)))
    else:
        follow_moved_home(config, dagster_home)
    return config


def follow_moved_home(config: Path, dagster_home: Path) -> bool:
    """Point the storage of our dagster.yaml at ``dagster_home/storage``; True when it was rewritten.

    Only the ``base_dir`` line changes (lines others added to the file stay), and only in a file whose first
    line is :data:`WRITTEN_BY`: a user's own dagster.yaml is never touched.
    """
    text = config.read_text()
    if not text.startswith(WRITTEN_BY):
        return False
    current = STORAGE_BASE_DIR.search(text)
    if current is None or _same_folder(current.group(2), dagster_home / "storage"):
        return False
    fixed = text[:current.start(2)] + _storage_value(dagster_home) + text[current.end(2):]
    scratch = config.with_name(f".{config.name}.{os.getpid()}.tmp")
    scratch.write_text(fixed)
    scratch.replace(config)  # atomic: a concurrent reader sees the old file or the new one, never half of it
    return True


def _same_folder(written: str, expected: Path) -> bool:
    value = written.strip()
    if value.startswith('"'):
        value = json.loads(value)
    return Path(value.strip("'")) == expected


def apply_pool_limits(instance) -> None:  # instance: dagster.DagsterInstance (kept untyped: no dagster import)
    """Set explicit slot counts so the UI's concurrency page names each pool."""
    for pool, limit in POOL_LIMITS.items():
        if instance.event_log_storage.get_concurrency_info(pool).slot_count != limit:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
