"""Rendering cutouts for the VLM, and the versioned prompts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from aion_assets.vlm.prompts import describe_prompt, load_prompt, rerank_prompt
from aion_assets.vlm.render import DEFAULT_BAND_SCALES, cutout_png, lupton_composite


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_rgb_cutout_goes_through_unchanged() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    png = cutout_png(rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode(png), rgb)


def test_lupton_maps_z_r_g_to_red_green_blue() -> None:
    flux = np.zeros((3, 8, 8), dtype=np.float32)
    flux[2] = 0.05  # z only
    image = lupton_composite(flux, ["g", "r", "z"])
    assert image[..., 0].min() > 0 and image[..., 1].max() == 0 and image[..., 2].max() == 0
    image = lupton_composite(flux[::-1].copy(), ["z", "r", "g"])  # band order comes from the names
    assert image[..., 0].min() > 0 and image[..., 2].max() == 0


def test_lupton_saturates_to_colour_not_white() -> None:
    flux = np.ones((3, 4, 4), dtype=np.float32) * np.array([1.0, 2.0, 4.0], dtype=np.float32)[:, None, None] * 100
    image = lupton_composite(flux, ["g", "r", "z"]).astype(float)
    red, green, blue = 4 * DEFAULT_BAND_SCALES["z"], 2 * DEFAULT_BAND_SCALES["r"], 1 * DEFAULT_BAND_SCALES["g"]
    assert image[0, 0, 0] == 255
    assert image[0, 0, 1] == pytest.approx(255 * green / red, abs=1)
    assert image[0, 0, 2] == pytest.approx(255 * blue / red, abs=1)


def test_real_grz_fixture_renders_with_dark_sky_and_bright_core(shared_data: Path) -> None:
    flux = fits.getdata(shared_data / "fixtures" / "legacysurvey_dr9_grz_cutout.fits").astype(np.float32)
    image = decode(cutout_png(flux, "g,r,z"))
    assert image.shape == (256, 256, 3)
    grey = image.mean(axis=-1)
    assert np.median(grey) < 20  # sky stays dark
    assert np.percentile(grey, 99.9) > 100  # the galaxy is visible, not crushed
    centre = image[118:138, 118:138].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[2]  # the early-type lens galaxy at the centre is red


def test_flux_without_band_names_is_an_error() -> None:
    with pytest.raises(ValueError, match="band names"):
        cutout_png(np.zeros((3, 8, 8), dtype=np.float32))


def test_describe_prompt_is_the_one_the_recorded_answers_used(shared_data: Path) -> None:
    prompt = describe_prompt("v1")
    assert prompt.text == (shared_data / "descriptions" / "prompt_v1.txt").read_text().strip()
    assert prompt.version_id.startswith("v1:") and len(prompt.short_hash) == 12
    assert "{query}" in rerank_prompt().text
    with pytest.raises(FileNotFoundError, match="describe_v1"):
        load_prompt("describe", "v999")
