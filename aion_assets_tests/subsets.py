"""Small copies of the real sample releases for tests that run the whole chain (the data itself is read-only)."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

import polars as pl


def copy_subset(source: Path, target: Path, object_ids: Collection[str]) -> None:
    """Copy a release's manifest, the catalog rows of ``object_ids`` and their images into ``target``."""
    (target / "images").mkdir(parents=True)
    catalog = pl.read_csv(source / "catalog.csv", infer_schema_length=0).filter(
        pl.col("object_id").is_in(list(object_ids)))
    for image in catalog["image"]:
        shutil.copyfile(source / image, target / image)
    catalog.write_csv(target / "catalog.csv")
    shutil.copyfile(source / "manifest.json", target / "manifest.json")
