"""What the VLM sees of a cutout: the ingested rgb.npy row as a lossless PNG, for RGB and flux releases alike;
and the versioned prompts."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from astropy.io import fits
from PIL import Image

from aion_assets.cutouts.ingest import ingest_shard, write_shard
from aion_assets.cutouts.readers import flux_to_rgb
from aion_assets.cutouts.releases import load_release
from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse
from aion_assets.vlm.describers import RecordedDescriber
from aion_assets.vlm.prompts import describe_prompt, load_prompt, rerank_prompt
from aion_assets.vlm.render import png_bytes
from aion_assets.vlm.sample import ShardImages

FIXTURE = "legacysurvey_dr9_grz_cutout.fits"


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def flux_release(root: Path, fixture: Path) -> Path:
    """A Legacy Survey FITS release: the real cutout, and the same object at half the flux (a shallower copy)."""
    folder = root / "ls-dr9-fits"
    (folder / "images").mkdir(parents=True)
    shutil.copyfile(fixture, folder / "images" / "lens.fits")
    with fits.open(fixture) as hdus:
        half = fits.PrimaryHDU(np.asarray(hdus[0].data, dtype=np.float32) * 0.5, header=hdus[0].header)
    half.writeto(folder / "images" / "lens_half.fits")
    pl.DataFrame({"object_id": ["lens", "lens_half"], "image": ["images/lens.fits", "images/lens_half.fits"],
                  "ra": ["357.9087"] * 2, "dec": ["-54.8817"] * 2}).write_csv(folder / "catalog.csv")
    (folder / "manifest.json").write_text(json.dumps({"release": "ls-dr9-fits", "bands": "grz"}))
    return folder


def test_png_is_lossless_and_only_of_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    png = png_bytes(rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode(png), rgb)
    with pytest.raises(ValueError, match="uint8"):  # flux is never rendered on the way to the VLM
        png_bytes(np.zeros((3, 160, 160), dtype=np.float32))


def test_describer_sees_the_rgb_rendered_at_ingestion_of_a_flux_release(
    tmp_path: Path, shared_data: Path, lake: Lake, warehouse: Warehouse,
) -> None:
    folder = flux_release(tmp_path / "releases", shared_data / "fixtures" / FIXTURE)
    release = load_release(folder)
    write_shard(lake, warehouse, ingest_shard(folder, release, 0, 100_000))
    rgb = lake.read_array("cutouts", release.name, "0000", "rgb.npy")
    flux = lake.read_array("cutouts", release.name, "0000", "flux.npy")
    cutouts = warehouse.query("SELECT object_id, shard, row, bands, sha256 FROM cutouts ORDER BY row")
    assert cutouts["object_id"].to_list() == ["lens", "lens_half"] and flux.shape == (2, 3, 160, 160)

    images = ShardImages(lake)
    for entry in cutouts.iter_rows(named=True):
        sent = images.loader(release.name, entry["shard"], entry["row"])()
        assert sent == png_bytes(rgb[entry["row"]])  # byte for byte what the galleries and the encoder read
        # rgb.npy is the fixed rendering of the stored flux; the sha256 stays that of the source file.
        np.testing.assert_array_equal(rgb[entry["row"]], flux_to_rgb(flux[entry["row"]], entry["bands"].split(",")))
        assert entry["sha256"] == hashlib.sha256((folder / "images" / f"{entry['object_id']}.fits").read_bytes()
                                                 ).hexdigest()
    # No per-image stretch: the shallower copy of the same object is darker, not re-stretched to look the same.
    assert rgb[1].astype(float).mean() < 0.8 * rgb[0].astype(float).mean()

    # Deterministic: ingesting again writes the same pixels, so the describer is sent the same PNG.
    write_shard(lake, warehouse, ingest_shard(folder, release, 0, 100_000))
    again = lake.read_array("cutouts", release.name, "0000", "rgb.npy")
    assert again.tobytes() == rgb.tobytes()
    assert ShardImages(lake).png(release.name, "0000", 0) == png_bytes(rgb[0])


def test_rgb_release_goes_to_the_describer_as_its_source_pixels(
    copy_release: Callable[..., Path], lake: Lake, warehouse: Warehouse,
) -> None:
    folder = copy_release("gz-decals-rings", limit=12)
    release = load_release(folder)
    write_shard(lake, warehouse, ingest_shard(folder, release, 0, 100_000))
    cutouts = warehouse.query("SELECT object_id, source_path, shard, row, sha256 FROM cutouts ORDER BY row")
    recorded = {(r, o): sha for r, o, sha, _ in RecordedDescriber().recorded_keys().iter_rows()}
    images = ShardImages(lake)
    answered = 0
    for entry in cutouts.iter_rows(named=True):
        source = folder / entry["source_path"]
        with Image.open(source) as image:
            np.testing.assert_array_equal(decode(images.png(release.name, entry["shard"], entry["row"])),
                                          np.asarray(image.convert("RGB")))
        # The content address is the source file's hash: the one the recorded answers were made from.
        assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        if (release.name, entry["object_id"]) in recorded:
            assert recorded[(release.name, entry["object_id"])] == entry["sha256"]
            answered += 1
    assert answered > 0


def test_describe_prompt_is_the_one_the_recorded_answers_used(shared_data: Path) -> None:
    prompt = describe_prompt("v1")
    assert prompt.text == (shared_data / "descriptions" / "prompt_v1.txt").read_text().strip()
    assert prompt.version_id.startswith("v1:") and len(prompt.short_hash) == 12
    assert "{query}" in rerank_prompt().text
    with pytest.raises(FileNotFoundError, match="describe_v1"):
        load_prompt("describe", "v999")
