"""Ingesting shards of each format, with corrupt inputs quarantined (with their reason) while the rest lands."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import polars as pl
import pytest
from astropy.io import fits
from astropy_healpix import HEALPix
from PIL import Image

from aion_assets.cutouts.ingest import (
    count_balance,
    duplicate_ids,
    ingest_shard,
    ingested_fingerprints,
    quarantine_summary_markdown,
    write_shard,
)
from aion_assets.cutouts.readers import FLUX_RENDERING, flux_to_rgb
from aion_assets.cutouts.releases import ReleaseError, load_release
from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse


@pytest.fixture(scope="module")
def fixture_flux(shared_data: Path) -> np.ndarray:
    with fits.open(shared_data / "fixtures" / "legacysurvey_dr9_grz_cutout.fits") as hdus:
        return np.asarray(hdus[0].data, dtype=np.float32)


def corrupt_jpeg_release(copy_release: Callable[..., Path], limit: int = 10) -> Path:
    """A real JPEG release subset plus one of each corrupt input the issue names."""
    folder = copy_release("gz-decals-rings", limit=limit)
    catalog = pl.read_csv(folder / "catalog.csv", infer_schema_length=0)
    first, second = catalog.row(0, named=True), catalog.row(1, named=True)
    truncated = folder / second["image"]
    truncated.write_bytes(truncated.read_bytes()[:900])
    extra = [
        {**first, "object_id": "escapee", "image": "../../etc/passwd"},
        {**first},  # duplicate object_id of row 0 pointing at a good image
        {**first, "object_id": ""},
        {**first, "object_id": "ghost", "image": "images/ghost.jpg"},
        {**first, "object_id": "badcoord", "ra": "north"},
    ]
    pl.concat([catalog, pl.DataFrame(extra, schema=catalog.schema)]).write_csv(folder / "catalog.csv")
    return folder


def fits_release(root: Path, flux: np.ndarray) -> Path:
    folder = root / "ls-fits"
    (folder / "images").mkdir(parents=True)
    sparse = flux.copy()
    sparse[:, 10:20, 10:20] = np.nan
    files = {
        "full": flux,
        "sparse_nan": sparse,
        "two_bands": flux[:2],
        "all_nan": np.full_like(flux, np.nan),
    }
    for name, cube in files.items():
        hdu = fits.PrimaryHDU(cube)
        for i, band in enumerate("grz"[: cube.shape[0]]):
            hdu.header[f"BAND{i}"] = band
        hdu.writeto(folder / "images" / f"{name}.fits")
    rows = [{"object_id": name, "image": f"images/{name}.fits", "ra": "357.9087", "dec": "-54.8817",
             "zspec": "0.32"} for name in files]
    pl.DataFrame(rows).write_csv(folder / "catalog.csv")
    (folder / "manifest.json").write_text(json.dumps({"release": "ls-fits", "bands": "grz"}))
    return folder


def hdf5_release(root: Path, flux: np.ndarray, with_catalog: bool) -> Path:
    folder = root / "mmu-h5"
    folder.mkdir(parents=True)
    cubes = np.stack([flux, flux * 0.5, np.full_like(flux, np.nan), flux[::-1]]).astype(np.float32)
    with h5py.File(folder / "cutouts.h5", "w") as handle:
        handle["object_id"] = np.array([b"h0", b"h1", b"h2", b"h3"])
        handle["ra"] = np.array([150.1, 150.2, 150.3, np.nan])
        handle["dec"] = np.array([2.1, 2.2, 2.3, np.nan])
        handle.create_dataset("image_array", data=cubes)
        handle["bands"] = np.array([b"g", b"r", b"z"])
    if with_catalog:
        pl.DataFrame({"object_id": ["h0", "h1", "h2", "h3", "missing"],
                      "morphology": ["spiral", "elliptical", "spiral", "", "spiral"]}).write_csv(
            folder / "catalog.csv")
    (folder / "manifest.json").write_text(json.dumps({"release": "mmu-h5", "hdf5": "cutouts.h5"}))
    return folder


def test_jpeg_release_with_corrupt_inputs(copy_release: Callable[..., Path], sample_releases: Path) -> None:
    folder = corrupt_jpeg_release(copy_release)
    release = load_release(folder)
    result = ingest_shard(folder, release, 0, 100_000)
    assert result.catalog_rows == 15
    reasons = dict(zip(result.quarantine["object_id"].fill_null("<null>"), result.quarantine["reason"]))
    catalog = pl.read_csv(folder / "catalog.csv", infer_schema_length=0)
    first_id, second_id = catalog["object_id"][0], catalog["object_id"][1]
    assert reasons[second_id].startswith("does not decode")
    assert "escapes the release folder" in reasons["escapee"]
    assert "missing file" in reasons["ghost"]
    assert "invalid coordinates" in reasons["badcoord"]
    assert "empty object_id" in reasons["<null>"]
    assert reasons[first_id].startswith("duplicate object_id (first at catalog row 0)")
    assert result.n_quarantined == 6 and result.n_accepted == 9
    assert result.n_accepted + result.n_quarantined == result.catalog_rows

    # Arrays are row-aligned with the tables, and hold the real pixels of each source file.
    assert result.rgb.shape == (9, 160, 160, 3) and result.flux is None
    assert result.cutouts["row"].to_list() == list(range(9))
    for row in (0, 8):
        source = folder / result.cutouts["source_path"][row]
        with Image.open(source) as image:
            np.testing.assert_array_equal(result.rgb[row], np.asarray(image.convert("RGB")))
    assert result.cutouts["object_id"].n_unique() == 9
    # healpix from the catalog's coordinates, nside 1024 nested.
    grid = HEALPix(nside=1024, order="nested")
    ra, dec = result.cutouts["ra"].to_numpy(), result.cutouts["dec"].to_numpy()
    expected = grid.lonlat_to_healpix(ra * u.deg, dec * u.deg)
    assert result.cutouts["healpix"].to_list() == [int(p) for p in expected]
    # Labels: one row per accepted object per label column, numeric values parsed.
    labels = result.labels
    assert set(labels["name"]) == set(release.label_columns)
    assert set(labels["object_id"]) == set(result.cutouts["object_id"])
    rings = labels.filter(pl.col("name") == "ring")
    assert rings["value_num"].is_in([0.0, 1.0]).all()
    assert "does not decode" in quarantine_summary_markdown(result.quarantine)


def test_fits_release_flux_and_rejections(tmp_path: Path, fixture_flux: np.ndarray) -> None:
    folder = fits_release(tmp_path / "releases", fixture_flux)
    result = ingest_shard(folder, load_release(folder), 0, 100_000)
    assert result.cutouts["object_id"].to_list() == ["full", "sparse_nan"]
    reasons = dict(zip(result.quarantine["object_id"], result.quarantine["reason"]))
    assert reasons["two_bands"].startswith("wrong band count: 2 band(s), manifest expects 3")
    assert reasons["all_nan"].startswith("non-finite values")
    assert result.flux is not None and result.flux.shape == (2, 3, 160, 160) and result.flux.dtype == np.float32
    assert np.isfinite(result.flux).all()
    assert result.cutouts["bands"].unique().to_list() == ["g,r,z"]
    assert result.cutouts["width"].to_list() == [256, 256]
    assert result.cutouts["healpix"].null_count() == 0
    source = (folder / "images" / "full.fits").read_bytes()
    assert result.cutouts["sha256"][0] == hashlib.sha256(source).hexdigest()
    assert result.labels.filter(pl.col("name") == "zspec")["value_num"].to_list() == [0.32, 0.32]


@pytest.mark.parametrize("with_catalog", [False, True])
def test_hdf5_release(tmp_path: Path, fixture_flux: np.ndarray, with_catalog: bool) -> None:
    folder = hdf5_release(tmp_path / "releases", fixture_flux, with_catalog)
    release = load_release(folder)
    result = ingest_shard(folder, release, 0, 100_000)
    assert result.cutouts["object_id"].to_list() == ["h0", "h1", "h3"]
    reasons = dict(zip(result.quarantine["object_id"], result.quarantine["reason"]))
    assert reasons["h2"].startswith("non-finite values: every pixel")
    assert result.cutouts["source_path"].to_list() == ["cutouts.h5#0", "cutouts.h5#1", "cutouts.h5#3"]
    assert result.cutouts["bands"][0] == "g,r,z"
    # Coordinates come from the file; unknown ones give null healpix.
    assert result.cutouts["ra"].to_list()[:2] == [150.1, 150.2]
    assert result.cutouts["healpix"].to_list()[2] is None and result.cutouts["healpix"].null_count() == 1
    np.testing.assert_allclose(result.flux[1], result.flux[0] * 0.5, rtol=1e-5, atol=1e-7)
    # rgb is the fixed rendering of each row's flux: half the flux is darker, not stretched back to look the same.
    for row in range(3):
        np.testing.assert_array_equal(result.rgb[row], flux_to_rgb(result.flux[row], ["g", "r", "z"]))
    assert result.rgb[1].astype(float).mean() < 0.8 * result.rgb[0].astype(float).mean()
    assert len(set(result.cutouts["sha256"])) == 3
    if with_catalog:
        assert "object_id not found in cutouts.h5" in reasons["missing"]
        morphology = result.labels.filter(pl.col("name") == "morphology")
        assert sorted(morphology["object_id"]) == ["h0", "h1"]  # h3's empty value is no label
        assert result.catalog_rows == 5
    else:
        assert result.catalog_rows == 4 and result.labels.is_empty()


def test_catalog_missing_a_column_rejects_the_release(copy_release: Callable[..., Path]) -> None:
    folder = copy_release("spacewarps-cfhtls", limit=3)
    pl.read_csv(folder / "catalog.csv", infer_schema_length=0).drop("image").write_csv(folder / "catalog.csv")
    with pytest.raises(ReleaseError, match="lacks required column"):
        load_release(folder)


def test_shards_split_the_catalog_and_catch_cross_shard_duplicates(
    copy_release: Callable[..., Path], lake: Lake, warehouse: Warehouse,
) -> None:
    folder = copy_release("gz1-sdss", limit=5)
    catalog = pl.read_csv(folder / "catalog.csv", infer_schema_length=0)
    pl.concat([catalog, catalog.head(1)]).write_csv(folder / "catalog.csv")  # row 5 repeats row 0
    release = load_release(folder, shard_size=2)
    assert release.shard_keys(2) == ["gz1-sdss|0000", "gz1-sdss|0001", "gz1-sdss|0002"]
    results = [ingest_shard(folder, release, i, 2) for i in range(3)]
    assert [r.catalog_rows for r in results] == [2, 2, 2]
    assert [r.n_accepted for r in results] == [2, 2, 1]
    assert results[2].quarantine["reason"][0].startswith("duplicate object_id")
    for result in results:
        write_shard(lake, warehouse, result)
    table = warehouse.query("SELECT object_id, shard, row FROM cutouts ORDER BY shard, row")
    assert table.height == 5 and table["object_id"].n_unique() == 5
    assert duplicate_ids(lake, "gz1-sdss").is_empty()
    assert lake.read_array("cutouts", "gz1-sdss", "0001", "rgb.npy").shape == (2, 160, 160, 3)
    objects = lake.read_parquet("cutouts", "gz1-sdss", "0001", "objects.parquet")
    assert objects["object_id"].to_list() == table.filter(pl.col("shard") == "0001")["object_id"].to_list()
    assert ingested_fingerprints(lake) == {k: release.fingerprint for k in release.shard_keys(2)}


def test_count_balance_sees_a_missing_row(
    copy_release: Callable[..., Path], lake: Lake, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = copy_release("spacewarps-cfhtls", limit=4).parent
    release = load_release(root / "spacewarps-cfhtls")
    write_shard(lake, warehouse, ingest_shard(release.path, release, 0, 100_000))
    balance = count_balance(lake, root, "spacewarps-cfhtls|0000")
    assert balance.passed and (balance.cutouts, balance.quarantined, balance.catalog_rows) == (4, 0, 4)
    with (root / "spacewarps-cfhtls" / "catalog.csv").open("a") as handle:
        handle.write("late,images/AT_asteroid.jpg,,,CFHTLS,artifacts,misc,0\n")
    late = count_balance(lake, root, "spacewarps-cfhtls|0000")
    assert not late.passed and late.catalog_rows == 5 and "!=" in late.message



def test_a_flux_shard_rendered_by_an_older_rule_is_planned_again(
    tmp_path: Path, fixture_flux: np.ndarray, copy_release: Callable[..., Path], lake: Lake, warehouse: Warehouse,
) -> None:
    flux_folder = fits_release(tmp_path / "releases", fixture_flux)
    flux_release = load_release(flux_folder)
    rgb_release = load_release(copy_release("spacewarps-cfhtls", limit=2))
    for release in (flux_release, rgb_release):
        write_shard(lake, warehouse, ingest_shard(release.path, release, 0, 100_000))
    assert json.loads(lake.read_bytes("cutouts", "ls-fits", "0000", "ingest.json"))["flux_rendering"] == FLUX_RENDERING
    expected = {"ls-fits|0000": flux_release.fingerprint, "spacewarps-cfhtls|0000": rgb_release.fingerprint}
    assert ingested_fingerprints(lake) == expected

    # Markers written before the rendering was recorded: the flux shard's rgb.npy may be another rendering, so it
    # is no longer "ingested"; an RGB shard's pixels are its source's, so it still is.
    for release in (flux_release, rgb_release):
        marker_path = ("cutouts", release.name, "0000", "ingest.json")
        marker = json.loads(lake.read_bytes(*marker_path))
        marker.pop("flux_rendering")
        lake.write_bytes(json.dumps(marker).encode(), *marker_path)
    assert ingested_fingerprints(lake) == {"spacewarps-cfhtls|0000": rgb_release.fingerprint}
