"""Decoding single cutouts: real JPEGs, the real Legacy Survey FITS cutout, HDF5 written here; and every way a
cutout is refused (truncated, wrong bands, NaN, paths leaving the release folder, missing)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from aion_assets.cutouts.readers import (
    BAND_SCALES,
    CANONICAL_SIZE,
    CutoutBudget,
    CutoutRejected,
    decode_file,
    decode_fits,
    decode_rgb,
    flux_to_rgb,
    hdf5_index,
    iter_hdf5,
    parse_bands,
    resolve_inside,
)


@pytest.fixture(scope="module")
def fits_bytes(shared_data: Path) -> bytes:
    return (shared_data / "fixtures" / "legacysurvey_dr9_grz_cutout.fits").read_bytes()


@pytest.fixture(scope="module")
def fits_flux(fits_bytes: bytes) -> np.ndarray:
    with fits.open(io.BytesIO(fits_bytes)) as hdus:
        return np.asarray(hdus[0].data, dtype=np.float32)


def _fits_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def _first_jpeg(sample_releases: Path, release: str = "gz1-sdss") -> Path:
    return sorted((sample_releases / release / "images").iterdir())[0]


def test_real_jpeg_decodes_to_canonical_rgb(sample_releases: Path) -> None:
    path = _first_jpeg(sample_releases)
    decoded = decode_file(path.read_bytes(), path.name)
    with Image.open(path) as reference:
        expected = np.asarray(reference.convert("RGB"))
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (CANONICAL_SIZE, CANONICAL_SIZE, 3)
    assert decoded.flux is None and decoded.bands == "rgb"
    assert (decoded.width, decoded.height) == expected.shape[1::-1]
    np.testing.assert_array_equal(decoded.rgb, expected)  # already 160x160: pixels untouched


def test_non_square_png_is_centre_cropped_then_resized(sample_releases: Path) -> None:
    with Image.open(_first_jpeg(sample_releases)) as source:
        wide = Image.new("RGB", (480, 240), (255, 0, 0))
        wide.paste(source.convert("RGB").resize((240, 240)), (120, 0))  # real galaxy in the centre, red margins
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    decoded = decode_file(buffer.getvalue(), "wide.png")
    assert (decoded.width, decoded.height) == (480, 240)
    assert decoded.rgb.shape == (160, 160, 3)
    # The red margins are cropped away: no column of the result is pure margin red.
    red_columns = ((decoded.rgb[..., 0] > 250) & (decoded.rgb[..., 1] < 5)).all(axis=0)
    assert not red_columns.any()


def test_truncated_jpeg_is_rejected(sample_releases: Path) -> None:
    data = _first_jpeg(sample_releases).read_bytes()
    with pytest.raises(CutoutRejected, match="does not decode"):
        decode_rgb(data[: len(data) // 2])
    with pytest.raises(CutoutRejected, match="does not decode"):
        decode_rgb(b"not an image at all")


def test_real_fits_cube_gives_flux_bands_and_a_preview(fits_bytes: bytes, fits_flux: np.ndarray) -> None:
    decoded = decode_file(fits_bytes, "cutout.fits")
    assert decoded.bands == "g,r,z"  # from the header's BAND0..BAND2
    assert decoded.flux is not None and decoded.flux.shape == (3, 160, 160) and decoded.flux.dtype == np.float32
    assert (decoded.width, decoded.height) == (256, 256)
    assert np.isfinite(decoded.flux).all()
    # Resampling keeps the flux level: band means agree with the source's to a few percent of its spread.
    for band in range(3):
        assert abs(decoded.flux[band].mean() - fits_flux[band].mean()) < 0.05 * fits_flux[band].std()
    assert decoded.rgb.shape == (160, 160, 3) and decoded.rgb.dtype == np.uint8
    np.testing.assert_array_equal(decoded.rgb, flux_to_rgb(decoded.flux, ["g", "r", "z"]))  # from the stored flux
    grey = decoded.rgb.mean(axis=-1)
    assert np.median(grey) < 20  # sky stays dark
    assert np.percentile(grey, 99.9) > 100  # the galaxy is visible, not crushed
    centre = decoded.rgb[74:86, 74:86].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] > centre[2]  # the early-type lens galaxy at the centre is red


def test_one_band_per_hdu_fits(fits_flux: np.ndarray) -> None:
    hdus = [fits.PrimaryHDU()]
    for name, plane in zip("grz", fits_flux):
        hdu = fits.ImageHDU(plane)
        hdu.header["FILTER"] = name
        hdus.append(hdu)
    decoded = decode_fits(_fits_bytes(hdus))
    assert decoded.bands == "g,r,z"
    reference = decode_fits(_fits_bytes([fits.PrimaryHDU(fits_flux)]), expected_bands=["g", "r", "z"])
    np.testing.assert_allclose(decoded.flux, reference.flux)


def test_wrong_band_count_against_the_manifest(fits_flux: np.ndarray) -> None:
    two_bands = _fits_bytes([fits.PrimaryHDU(fits_flux[:2])])
    with pytest.raises(CutoutRejected, match="wrong band count: 2 band"):
        decode_fits(two_bands, expected_bands=["g", "r", "z"])
    assert decode_fits(two_bands).flux.shape[0] == 2  # without a promise, two bands are fine


def test_all_nan_fits_is_rejected_and_sparse_nan_is_zeroed(fits_flux: np.ndarray) -> None:
    with pytest.raises(CutoutRejected, match="every pixel"):
        decode_fits(_fits_bytes([fits.PrimaryHDU(np.full_like(fits_flux, np.nan))]))
    mostly = fits_flux.copy()
    mostly[:, :200, :] = np.nan
    with pytest.raises(CutoutRejected, match="non-finite values: 78%"):
        decode_fits(_fits_bytes([fits.PrimaryHDU(mostly)]))
    sparse = fits_flux.copy()
    sparse[:, 100:104, 100:104] = np.nan
    sparse[0, 0, 0] = np.inf
    decoded = decode_fits(_fits_bytes([fits.PrimaryHDU(sparse)]))
    assert np.isfinite(decoded.flux).all()
    assert 0 < decoded.nonfinite_fraction < 0.01


def test_damaged_fits_is_rejected(fits_bytes: bytes) -> None:
    with pytest.raises(CutoutRejected, match="does not decode"):
        decode_fits(fits_bytes[:5000])


def test_paths_must_stay_inside_the_release(tmp_path: Path) -> None:
    release = tmp_path / "release"
    (release / "images").mkdir(parents=True)
    (release / "images" / "ok.jpg").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, release / "images" / "link.jpg")
    assert resolve_inside(release, "images/ok.jpg") == (release / "images" / "ok.jpg").resolve()
    with pytest.raises(CutoutRejected, match="escapes the release folder"):
        resolve_inside(release, "../../etc/passwd")
    with pytest.raises(CutoutRejected, match="escapes the release folder"):
        resolve_inside(release, "images/link.jpg")
    with pytest.raises(CutoutRejected, match="absolute"):
        resolve_inside(release, "/etc/passwd")
    with pytest.raises(CutoutRejected, match="missing file"):
        resolve_inside(release, "images/none.jpg")
    with pytest.raises(CutoutRejected, match="empty image path"):
        resolve_inside(release, "  ")


def test_hdf5_rows_and_band_names(tmp_path: Path, fits_flux: np.ndarray) -> None:
    path = tmp_path / "cutouts.h5"
    stack = np.stack([fits_flux, fits_flux[::-1], fits_flux * 2]).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle["object_id"] = np.array([b"a", b"b", b"c"])
        handle["ra"] = np.array([10.0, 20.0, np.nan])
        handle["dec"] = np.array([-5.0, 5.0, np.nan])
        images = handle.create_dataset("image_array", data=stack)
        images.attrs["bands"] = "g,r,z"
    ids, ra, dec, bands, shape = hdf5_index(path)
    assert ids == ["a", "b", "c"] and ra[:2] == [10.0, 20.0] and ra[2] is None and dec[2] is None
    assert bands == ["g", "r", "z"] and shape == (3, 3, 256, 256)
    rows = list(iter_hdf5(path, [2, 0]))
    assert [r.object_id for r in rows] == ["c", "a"]
    np.testing.assert_array_equal(rows[0].flux, stack[2])


def test_hdf5_without_images_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle["object_id"] = np.array([b"a"])
    with pytest.raises(CutoutRejected, match="image_array"):
        hdf5_index(path)


def test_band_parsing_and_preview_channel_order(fits_flux: np.ndarray) -> None:
    assert parse_bands("grz") == ["g", "r", "z"]
    assert parse_bands("g, r ,z") == ["g", "r", "z"]
    assert parse_bands(["u", "g"]) == ["u", "g"]
    assert parse_bands(None) is None
    # Only the z band lit: with g,r,z names the light must land in the red channel.
    only_z = np.zeros_like(fits_flux)
    only_z[2] = np.abs(fits_flux[2])
    rgb = flux_to_rgb(only_z, ["g", "r", "z"])
    assert rgb[..., 0].sum() > 0 and rgb[..., 1].sum() == 0 and rgb[..., 2].sum() == 0


def test_rendering_is_fixed_not_stretched_per_image(fits_flux: np.ndarray) -> None:
    """One object looks the same wherever it is rendered, and a fainter one looks fainter: no per-image stretch."""
    bands = ["g", "r", "z"]
    image = flux_to_rgb(fits_flux, bands)
    assert flux_to_rgb(fits_flux.copy(), bands).tobytes() == image.tobytes()
    fainter = flux_to_rgb(fits_flux * 0.25, bands).astype(float)
    assert fainter.mean() < 0.6 * image.astype(float).mean()
    # A bright neighbour in the same cutout leaves the rest of the image as it was.
    with_star = fits_flux.copy()
    with_star[:, :8, :8] = 500.0
    np.testing.assert_array_equal(flux_to_rgb(with_star, bands)[8:, 8:], image[8:, 8:])


def test_saturated_pixels_keep_their_colour_through_the_band_scales() -> None:
    flux = np.ones((3, 4, 4), dtype=np.float32) * np.array([1.0, 2.0, 4.0], dtype=np.float32)[:, None, None] * 100
    image = flux_to_rgb(flux, ["g", "r", "z"]).astype(float)
    red, green, blue = 4 * BAND_SCALES["z"], 2 * BAND_SCALES["r"], 1 * BAND_SCALES["g"]
    assert image[0, 0, 0] == 255
    assert image[0, 0, 1] == pytest.approx(255 * green / red, abs=1)
    assert image[0, 0, 2] == pytest.approx(255 * blue / red, abs=1)


def test_channels_follow_band_names_not_file_order(fits_flux: np.ndarray) -> None:
    reordered = np.ascontiguousarray(fits_flux[::-1])  # z, r, g
    np.testing.assert_array_equal(flux_to_rgb(reordered, ["z", "r", "g"]), flux_to_rgb(fits_flux, ["g", "r", "z"]))
    grey = flux_to_rgb(fits_flux[1:2], ["r"])
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


# -- budgets, .fits.gz and .fz --------------------------------------------------------------------------------------
BOMB_SIDE = 15000


def _tile_compressed(hdus: list) -> bytes:
    """The same HDUs with every image tile-compressed, losslessly (GZIP_2 byte-shuffled, no quantisation)."""
    out = [fits.PrimaryHDU()]
    for hdu in hdus:
        if hdu.data is not None:
            out.append(fits.CompImageHDU(hdu.data, header=hdu.header, compression_type="GZIP_2", quantize_level=0))
    return _fits_bytes(out)


def test_fits_gz_and_fz_decode_to_the_flux_of_the_plain_file(fits_bytes: bytes) -> None:
    plain = decode_file(fits_bytes, "cutout.fits")
    gzipped = gzip.compress(fits_bytes)
    with fits.open(io.BytesIO(fits_bytes)) as hdus:
        tiled = _tile_compressed(list(hdus))
        quantised = _fits_bytes([fits.PrimaryHDU(), fits.CompImageHDU(hdus[0].data, header=hdus[0].header)])
    assert len(gzipped) < len(fits_bytes) and b"ZIMAGE" in tiled
    for data, name in ((gzipped, "cutout.fits.gz"), (tiled, "cutout.fits.fz"), (gzipped, "no-suffix")):
        decoded = decode_file(data, name)
        assert decoded.bands == "g,r,z" and (decoded.width, decoded.height) == (256, 256)
        np.testing.assert_array_equal(decoded.flux, plain.flux)  # lossless: the very same flux
        np.testing.assert_array_equal(decoded.rgb, plain.rgb)
    # astropy's default RICE_1 quantises floats (16 levels per noise sigma): equal to well under the sky noise.
    lossy = decode_file(quantised, "cutout.fz")
    noise = float(np.std(plain.flux[:, :20, :20]))
    assert float(np.abs(lossy.flux - plain.flux).max()) < 0.1 * noise


def test_damaged_gzip_is_rejected(fits_bytes: bytes) -> None:
    gzipped = gzip.compress(fits_bytes)
    with pytest.raises(CutoutRejected, match="does not decode: the gzip stream is truncated"):
        decode_file(gzipped[: len(gzipped) // 2], "cutout.fits.gz")
    with pytest.raises(CutoutRejected, match="does not decode"):
        decode_file(gzipped[:10] + b"garbage" * 100, "cutout.fits.gz")


def test_budgets_come_from_the_settings(fits_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    decode_file(fits_bytes, "cutout.fits")  # 3 x 256 x 256 float32: far inside the defaults
    monkeypatch.setenv("AION_MAX_CUTOUT_PIXELS", str(3 * 256 * 256 - 1))
    with pytest.raises(CutoutRejected, match=r"3x256x256 BITPIX -32 is 196,608 pixels x bands, over the pixel "
                                             r"budget of 196,607 \(AION_MAX_CUTOUT_PIXELS\)"):
        decode_file(fits_bytes, "cutout.fits")
    monkeypatch.setenv("AION_MAX_CUTOUT_PIXELS", str(3 * 256 * 256))
    decode_file(fits_bytes, "cutout.fits")  # the budget is inclusive
    monkeypatch.setenv("AION_MAX_CUTOUT_BYTES", str(len(fits_bytes) - 1))
    with pytest.raises(CutoutRejected, match=f"the file is {len(fits_bytes):,} bytes, over the byte budget"):
        decode_file(fits_bytes, "cutout.fits")
    # A gzip copy is small on disk, but decodes to the same bytes: its flux (786,432 bytes) is over budget.
    monkeypatch.setenv("AION_MAX_CUTOUT_BYTES", str(3 * 256 * 256 * 4 - 1))
    with pytest.raises(CutoutRejected, match="decodes to 786,432 bytes, over the byte budget"):
        decode_file(gzip.compress(fits_bytes), "cutout.fits.gz")


def test_tile_compressed_one_band_per_hdu_counts_every_band(fits_flux: np.ndarray) -> None:
    planes = [fits.ImageHDU(plane, header=fits.Header([("FILTER", band)])) for band, plane in zip("grz", fits_flux)]
    tiled = _tile_compressed(planes)
    assert decode_file(tiled, "planes.fz").bands == "g,r,z"
    with pytest.raises(CutoutRejected, match=r"256x256 BITPIX -32 \+ .* \+ .* is 196,608 pixels x bands"):
        decode_file(tiled, "planes.fz", budget=CutoutBudget(max_pixels=2 * 256 * 256, max_bytes=1 << 30))


def test_rgb_images_have_the_budget_too(sample_releases: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 3000)).save(buffer, format="PNG")  # 27 Mpx x bands in a 30 kB file
    with pytest.raises(CutoutRejected, match="3x3000x3000 RGB is 27,000,000 pixels x bands, over the pixel budget"):
        decode_file(buffer.getvalue(), "huge.png")
    jpeg = _first_jpeg(sample_releases).read_bytes()
    with pytest.raises(CutoutRejected, match="over the byte budget"):
        decode_file(jpeg, "small.jpg", budget=CutoutBudget(max_pixels=1 << 30, max_bytes=len(jpeg) - 1))


def test_hdf5_rows_over_budget_refuse_the_file_before_any_row_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as handle:
        handle["object_id"] = np.array([b"a", b"b"])
        # Chunked and compressed, never written: the file is tiny, each row declares 4 x 4096 x 4096.
        handle.create_dataset("image_array", shape=(2, 4, 4096, 4096), dtype="f4", chunks=(1, 1, 512, 512),
                              compression="gzip")
    assert path.stat().st_size < 100_000
    with pytest.raises(CutoutRejected, match=r"big.h5: each row \(4x4096x4096 float32\) is 67,108,864 pixels"):
        hdf5_index(path)
    # Small rows stored in one chunk of all of them: reading any row would inflate the whole chunk.
    with h5py.File(path, "w") as handle:
        handle["object_id"] = np.array([f"o{i}".encode() for i in range(64)])
        handle.create_dataset("image_array", shape=(64, 3, 64, 64), dtype="f4", chunks=(64, 3, 64, 64),
                              compression="gzip")
    with pytest.raises(CutoutRejected, match="chunks of 3,145,728 bytes, over the byte budget of 1,048,576"):
        hdf5_index(path, budget=CutoutBudget(max_pixels=1 << 20, max_bytes=1 << 20))
    assert len(hdf5_index(path)[0]) == 64  # inside the default budget


# The bombs are decoded in a fresh interpreter, so its peak memory (ru_maxrss) is the decode's alone; astropy and
# the settings are imported first, and the refusal is timed and measured from there.
BOMB_PROBE = """
import json, resource, sys, time
from pathlib import Path
import astropy.io.fits
from aion_assets.cutouts.readers import CutoutBudget, CutoutRejected, decode_file
CutoutBudget.from_settings()
path = Path(sys.argv[1])
data = path.read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    decode_file(data, path.name)
    reason = None
except CutoutRejected as rejected:
    reason = rejected.reason
print(json.dumps({"reason": reason, "seconds": time.perf_counter() - started,
                  "peak_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def _probe_bomb(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(path)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    # np.zeros is backed by the kernel's zero page, so writing these costs little memory and well under a second.
    tiled = folder / "zeros.fits.fz"
    zeros = np.zeros((BOMB_SIDE, BOMB_SIDE), dtype=np.uint8)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(zeros, compression_type="RICE_1", tile_shape=(1000, 1000))]
                 ).writeto(tiled)
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", BOMB_SIDE),
                          ("NAXIS2", BOMB_SIDE)]).tostring().encode()
    # Gzip members concatenate into one stream (RFC 1952), so one compressed block of zeros, repeated, is a bomb
    # written in milliseconds.
    zero_member = gzip.compress(bytes(BOMB_SIDE * 4 * 1000), compresslevel=9)  # 60 MB of float32 zeros
    declared = folder / "zeros.fits.gz"  # 900 MB of float32 zeros behind an honest header
    declared.write_bytes(gzip.compress(header) + zero_member * (BOMB_SIDE // 1000))
    hidden = folder / "small-header.fits.gz"  # a 16x16 image, then 1.2 GB of zeros it never declared
    small = _fits_bytes([fits.PrimaryHDU(np.ones((16, 16), dtype=np.float32))])
    hidden.write_bytes(gzip.compress(small) + zero_member * 20)
    return {"tiled": tiled, "declared": declared, "hidden": hidden}


def test_tile_compressed_bomb_is_refused_from_its_header(bombs: dict[str, Path]) -> None:
    assert bombs["tiled"].stat().st_size < 4_000_000  # 225 Mpx in a few MB
    probe = _probe_bomb(bombs["tiled"])
    assert probe["reason"] == (f"too large: tile-compressed {BOMB_SIDE}x{BOMB_SIDE} BITPIX 8 is 225,000,000 pixels x "
                               "bands, over the pixel budget of 16,777,216 (AION_MAX_CUTOUT_PIXELS)")
    assert probe["seconds"] < 0.5 and probe["peak_growth_mb"] < 30, probe


def test_gzip_bombs_are_refused_while_inflating(bombs: dict[str, Path]) -> None:
    assert bombs["declared"].stat().st_size < 2_000_000 and bombs["hidden"].stat().st_size < 2_000_000
    declared = _probe_bomb(bombs["declared"])  # refused on its header, within the first inflated MB
    assert declared["reason"].startswith(f"too large: {BOMB_SIDE}x{BOMB_SIDE} BITPIX -32 is 225,000,000 pixels")
    assert declared["seconds"] < 0.5 and declared["peak_growth_mb"] < 30, declared
    hidden = _probe_bomb(bombs["hidden"])  # inflated only up to the byte budget (128 MiB), never to 1 GB
    assert hidden["reason"] == ("too large: the gzip stream inflates past the byte budget of 134,217,728 bytes "
                                "(AION_MAX_CUTOUT_BYTES)")
    # Inflating up to the cap is the price of a bomb whose header lies: ~0.3 s per 128 MiB on a free core.
    assert hidden["seconds"] < 3.0 and hidden["peak_growth_mb"] < 2 * 128 + 20, hidden


def test_a_bomb_in_a_release_is_quarantined_with_its_reason(tmp_path: Path, fits_bytes: bytes,
                                                             bombs: dict[str, Path]) -> None:
    import polars as pl

    from aion_assets.cutouts.ingest import ingest_shard
    from aion_assets.cutouts.releases import load_release

    folder = tmp_path / "ls-bombs"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "good.fits.gz").write_bytes(gzip.compress(fits_bytes))
    (folder / "images" / "bomb.fits.fz").write_bytes(bombs["tiled"].read_bytes())
    pl.DataFrame({"object_id": ["good", "bomb"], "image": ["images/good.fits.gz", "images/bomb.fits.fz"]}
                 ).write_csv(folder / "catalog.csv")
    (folder / "manifest.json").write_text(json.dumps({"release": "ls-bombs", "bands": "grz"}))
    result = ingest_shard(folder, load_release(folder), 0, 100)
    assert result.cutouts["object_id"].to_list() == ["good"]
    assert result.flux is not None and result.flux.shape == (1, 3, 160, 160)
    quarantined = result.quarantine.select("object_id", "reason").rows()
    assert quarantined == [("bomb", f"too large: tile-compressed {BOMB_SIDE}x{BOMB_SIDE} BITPIX 8 is 225,000,000 "
                                    "pixels x bands, over the pixel budget of 16,777,216 (AION_MAX_CUTOUT_PIXELS)")]
