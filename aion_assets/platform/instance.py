"""The stack's Dagster instance: a dagster.yaml with a run queue and concurrency pools, its storage sqlite under
DAGSTER_HOME (embedded) or PostgreSQL (cluster: runs, events and schedules in ``dagster-postgres``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# Pools named by the design. `gpu`: one accelerator-bound step at a time; `duckdb_writer`: DuckDB allows one
# writing process per file; `vlm_api`: paid API calls, bounded across runs.
POOL_LIMITS = {"gpu": 1, "duckdb_writer": 1, "vlm_api": 1}
# On the cluster DuckLake takes many writers at once and there are several GPU nodes; paid API calls stay serial.
CLUSTER_POOL_LIMITS = {"gpu": 4, "duckdb_writer": 8, "vlm_api": 1}

# What both profiles' files end with. Runs the UI or the daemon launched: the daemon fails one stuck starting or
# cancelling, and gives back the pool slots a finished run still holds. The CLI's in-process runs are recovered
# by aion itself (runner.py).
_SHARED_TAIL = """\
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  free_slots_after_run_end_seconds: 30
"""

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
""" + _SHARED_TAIL

# The cluster profile on one machine: the same engines as deploy/dagster.yaml less Kubernetes (runs are local
# processes; their steps run where AION_EXECUTOR says). The URL is read by Dagster from the environment, so the
# file holds no password.
CLUSTER_DAGSTER_YAML = """\
# Written by aion_assets (platform/instance.py). Cluster profile: runs, events and schedules in PostgreSQL.
storage:
  postgres:
    postgres_url:
      env: AION_DAGSTER_POSTGRES_URL
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
""" + _SHARED_TAIL

# The first line of every dagster.yaml this module writes: only such a file is ever rewritten.
WRITTEN_BY = "# Written by aion_assets (platform/instance.py)."
# The sqlite storage folder of a file we wrote (the value may be bare, as older versions wrote it, or quoted).
STORAGE_BASE_DIR = re.compile(r"^(storage:\n  sqlite:\n    base_dir: )(.*)$", re.MULTILINE)


def _storage_value(dagster_home: Path) -> str:
    # A JSON string is a YAML double-quoted scalar: a path with spaces, colons or '#' stays one value.
    return json.dumps(str(dagster_home / "storage"))


def ensure_dagster_home(dagster_home: Path, profile: str = "embedded") -> Path:
    """Create DAGSTER_HOME with the profile's dagster.yaml if missing; never overwrite a user's file.

    Dagster needs an absolute storage folder, so a home that was copied or moved still names the old one (it
    would read the old runs and write new ones there): the file we wrote is pointed back into this home. A file
    we wrote for the other profile is replaced by this profile's.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    wanted = CLUSTER_DAGSTER_YAML if profile == "cluster" else DAGSTER_YAML.format(
        storage=_storage_value(dagster_home))
    if not config.exists() or (config.read_text().startswith(WRITTEN_BY)
                               and _is_cluster_file(config.read_text()) != (profile == "cluster")):
        _write_atomically(config, wanted)
    elif profile != "cluster":
        follow_moved_home(config, dagster_home)
    return config


def _is_cluster_file(text: str) -> bool:
    return text.splitlines()[0] == CLUSTER_DAGSTER_YAML.splitlines()[0]


def _write_atomically(config: Path, text: str) -> None:
    scratch = config.with_name(f".{config.name}.{os.getpid()}.tmp")
    scratch.write_text(text)
    scratch.replace(config)  # atomic: a concurrent reader sees the old file or the new one, never half of it


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
    _write_atomically(config, text[:current.start(2)] + _storage_value(dagster_home) + text[current.end(2):])
    return True


def _same_folder(written: str, expected: Path) -> bool:
    value = written.strip()
    if value.startswith('"'):
        value = json.loads(value)
    return Path(value.strip("'")) == expected


def apply_pool_limits(instance, profile: str = "embedded") -> None:  # instance: a DagsterInstance (no import)
    """Set explicit slot counts so the UI's concurrency page names each pool."""
    for pool, limit in (CLUSTER_POOL_LIMITS if profile == "cluster" else POOL_LIMITS).items():
        if instance.event_log_storage.get_concurrency_info(pool).slot_count != limit:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
