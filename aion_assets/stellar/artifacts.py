"""The stellar emulator's versions in the lake: ``models/stellar/v<registered version>/`` holds the checkpoint and
the standardisation its inputs and outputs are in; ``models/stellar/latest.json`` names the newest complete one.

The standardisation travels with the checkpoint because a model's numbers mean nothing without it: a catalogue
refreshed later (new stars, another median) must not silently change what an old version's outputs mean.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import (
    STELLAR_LATEST_POINTER,
    STELLAR_MODELS_DIR,
    stellar_checkpoint_path,
    stellar_standardisation_path,
    versions_holding,
)
from aion_assets.stellar.catalog import Standardisation

REGISTERED_MODEL = "aion-stellar-emulator"
EXPERIMENT = "aion-stellar"


class StellarModelMissing(FileNotFoundError):
    """A version (or the pointer) the lake does not hold; the message says what to run."""


def checkpoint_bytes(model) -> bytes:
    """The model as one checkpoint file's bytes: serialized once, then given to MLflow and to the lake alike."""
    from aion_assets.stellar.emulator import save_emulator

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "emulator.pt"
        save_emulator(model, local)
        return local.read_bytes()


def save_to_lake(lake: Lake, model_version: int, checkpoint: bytes, standardisation: pl.DataFrame) -> str:
    """The standardisation first, then the checkpoint: a checkpoint in the lake always has its units beside it."""
    lake.write_parquet(standardisation.select("name", "median", "mad", "n"), *stellar_standardisation_path(model_version))
    return lake.write_bytes(checkpoint, *stellar_checkpoint_path(model_version))


def load_from_lake(lake: Lake, model_version: int, device: str = "cpu"):
    """(model, Standardisation) of one version."""
    from aion_assets.stellar.emulator import load_emulator

    parts = stellar_checkpoint_path(model_version)
    if not lake.exists(*parts):
        raise StellarModelMissing(f"no stellar emulator version {model_version} in the lake (held: "
                                  f"{', '.join(map(str, trained_versions(lake))) or 'none'})")
    standardisation = Standardisation.from_table(lake.read_parquet(*stellar_standardisation_path(model_version)))
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "emulator.pt"
        local.write_bytes(lake.read_bytes(*parts))
        return load_emulator(local, device=device), standardisation


def trained_versions(lake: Lake) -> list[int]:
    return versions_holding(lake, STELLAR_MODELS_DIR, "emulator.pt")


def write_latest_pointer(lake: Lake, model_version: int, mlflow_run_id: str) -> None:
    if not lake.exists(*stellar_checkpoint_path(model_version)):
        raise StellarModelMissing(f"cannot name stellar emulator version {model_version}: it has no checkpoint")
    pointer = {"version": int(model_version), "mlflow_run_id": mlflow_run_id,
               "written_at": datetime.now(timezone.utc).isoformat()}
    lake.write_bytes(json.dumps(pointer).encode(), *STELLAR_LATEST_POINTER)


def resolve_version(lake: Lake, model_version: int | None) -> int:
    """The version asked for, or the newest one the pointer names."""
    if model_version is not None:
        if model_version not in trained_versions(lake):
            held = ", ".join(map(str, trained_versions(lake))) or "none"
            raise StellarModelMissing(f"stellar emulator version {model_version} is not in the lake (held: {held})")
        return int(model_version)
    if not lake.exists(*STELLAR_LATEST_POINTER):
        raise StellarModelMissing("no stellar emulator yet: materialize stellar_emulator "
                                  "(aion materialize 'group:stellar')")
    return int(json.loads(lake.read_bytes(*STELLAR_LATEST_POINTER))["version"])
