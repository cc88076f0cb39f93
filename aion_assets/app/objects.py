"""One object's catalogue row, labels, description and image; cone searches. Reads the warehouse; no dagster.

Every lookup goes by (object id, release) through the `cutouts` view, as a bound SQL parameter: a request names
an object, never a path, so nothing a client sends reaches the file system.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import shard_dir
from aion_assets.platform.warehouse import Warehouse
from aion_assets.search.service import AmbiguousObject, UnknownObject

# Columns of the `cutouts` view that say where the pixels are, not what the object is.
STORAGE_COLUMNS = ("shard", "row")


def locate(warehouse: Warehouse, object_id: str, release: str | None = None) -> dict[str, Any]:
    """The object's `cutouts` row; its release is needed only when its id is in several. One warehouse read:
    every cutout the page shows comes through here."""
    sql, params = "SELECT * FROM cutouts WHERE object_id = ?", [object_id]
    if release is not None:
        sql, params = sql + " AND release = ?", params + [release]
    try:
        rows = warehouse.query(sql + " ORDER BY release", params).to_dicts()
    except duckdb.CatalogException:
        raise UnknownObject("no cutouts ingested yet") from None
    if not rows:
        raise UnknownObject(f"object {object_id!r} not found" + (f" in release {release!r}" if release else ""))
    if len(rows) > 1:
        raise AmbiguousObject(f"object {object_id!r} is in several releases "
                              f"({', '.join(r['release'] for r in rows)}): pass release")
    return rows[0]


def object_detail(warehouse: Warehouse, object_id: str, release: str | None = None) -> dict[str, Any]:
    """Catalogue row, coordinates, published labels and the latest recorded description of one object."""
    row = locate(warehouse, object_id, release)
    key = [row["object_id"], row["release"]]
    tables = warehouse.tables()
    labels = {}
    if "labels" in tables:
        found = warehouse.query("SELECT name, value FROM labels WHERE object_id = ? AND release = ? ORDER BY name",
                                key)
        labels = dict(zip(found["name"].to_list(), found["value"].to_list()))
    description = None
    if "descriptions" in tables:
        found = warehouse.query(
            "SELECT summary, description, model, prompt_version, created_at FROM descriptions "
            "WHERE object_id = ? AND release = ? ORDER BY created_at DESC LIMIT 1", key).to_dicts()
        description = found[0] if found else None
    has_position = _finite(row.get("ra")) and _finite(row.get("dec"))
    return {
        "object_id": row["object_id"], "release": row["release"],
        "coordinates": {"ra": row["ra"], "dec": row["dec"]} if has_position else None,
        "catalogue": {k: v for k, v in row.items() if k not in STORAGE_COLUMNS},
        "labels": labels, "description": description,
    }


def cone_search(warehouse: Warehouse, ra: float, dec: float, radius_arcsec: float, k: int,
                release: str | None = None) -> pl.DataFrame:
    """Objects within ``radius_arcsec`` of (ra, dec) in degrees, nearest first: release, object_id, ra, dec,
    separation_arcsec, rank. The haversine separation is exact at any distance; a declination band first lets
    DuckDB skip row groups by their statistics."""
    if "cutouts" not in warehouse.tables():
        return pl.DataFrame(schema={"release": pl.String, "object_id": pl.String, "ra": pl.Float64,
                                    "dec": pl.Float64, "separation_arcsec": pl.Float64, "rank": pl.Int64})
    radius_deg = radius_arcsec / 3600.0
    where = "ra IS NOT NULL AND dec IS NOT NULL AND dec BETWEEN ? AND ?"
    params: list[Any] = [dec - radius_deg, dec + radius_deg]
    if release is not None:
        where, params = where + " AND release = ?", params + [release]
    separation = ("degrees(2 * asin(sqrt(pow(sin(radians(dec - ?) / 2), 2) + cos(radians(dec)) * cos(radians(?)) "
                  "* pow(sin(radians(ra - ?) / 2), 2)))) * 3600")
    return warehouse.query(
        f"SELECT release, object_id, ra, dec, separation_arcsec, "
        f"row_number() OVER (ORDER BY separation_arcsec, release, object_id) AS rank FROM ("
        f"  SELECT release, object_id, ra, dec, {separation} AS separation_arcsec FROM cutouts WHERE {where}"
        f") WHERE separation_arcsec <= ? ORDER BY rank LIMIT ?",
        [dec, dec, ra, *params, radius_arcsec, k])


def cutout_png(lake: Lake, row: dict[str, Any]) -> bytes:
    """The cutout's canonical RGB image (what the describer and the encoders saw) as a PNG."""
    from aion_assets.vlm.render import png_bytes

    pixels = lake.read_array(*shard_dir(row["release"], row["shard"]), "rgb.npy", mmap=True)
    return png_bytes(pixels[int(row["row"])])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
