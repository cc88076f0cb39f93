"""The embedded Dagster instance: a dagster.yaml with sqlite storage, a run queue and concurrency pools."""

from __future__ import annotations

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
"""


def ensure_dagster_home(dagster_home: Path) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml if missing; never overwrite a user's file."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML.format(storage=dagster_home / "storage"))
    return config


def apply_pool_limits(instance) -> None:  # instance: dagster.DagsterInstance (kept untyped: no dagster import)
    """Set explicit slot counts so the UI's concurrency page names each pool."""
    for pool, limit in POOL_LIMITS.items():
        if instance.event_log_storage.get_concurrency_info(pool).slot_count != limit:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
