"""AION-1 encoder on the real Legacy Survey DR9 g,r,z FITS cutout: input building, band mapping, missing weights.

The real weights are gated and not here. The last test builds a tiny AION model and image codec with the
package's own classes (random weights, real architecture), saves them in the Hugging Face layout and runs the
encoder from that folder, so the code after the weights (loading, tokenising, encoding, pooling) is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from aion_assets.encoders.aion1 import (
    AION_IMAGE_SIZE,
    WEIGHTS_DIR_ENV,
    Aion1Encoder,
    AionWeightsMissing,
    aion_band_names,
    build_image_input,
    load_aion1_encoder,
    resolve_weights_dir,
)
from aion_assets.encoders.image import load_image_encoder


@pytest.fixture(scope="module")
def fits_cutout(shared_data: Path) -> tuple[np.ndarray, list[str]]:
    with fits.open(shared_data / "fixtures" / "legacysurvey_dr9_grz_cutout.fits") as hdul:
        header = hdul[0].header
        flux = hdul[0].data
        bands = [header[f"BAND{i}"].strip() for i in range(header["NAXIS3"])]
        return np.array(flux), bands


def test_band_mapping() -> None:
    assert aion_band_names("g,r,z") == ["DES-G", "DES-R", "DES-Z"]
    assert aion_band_names(["g", "r", "i", "z"], survey="LegacySurvey") == ["DES-G", "DES-R", "DES-I", "DES-Z"]
    assert aion_band_names(["g", "y"], survey="hsc") == ["HSC-G", "HSC-Y"]
    assert aion_band_names(["DES-R", "des-z"]) == ["DES-R", "DES-Z"]
    with pytest.raises(ValueError, match="'u' has no AION-1 equivalent"):
        aion_band_names(["u", "g"])
    with pytest.raises(ValueError, match="no AION-1 equivalent"):
        aion_band_names(["y"], survey="legacysurvey")  # DECam y is not an AION Legacy Survey band
    with pytest.raises(ValueError, match="mix surveys"):
        aion_band_names(["DES-G", "HSC-R"])
    with pytest.raises(ValueError, match="unknown survey"):
        aion_band_names(["g"], survey="euclid")


def test_image_input_from_the_fits_cutout(fits_cutout: tuple[np.ndarray, list[str]]) -> None:
    flux, bands = fits_cutout
    assert bands == ["g", "r", "z"] and flux.shape == (3, 256, 256) and flux.dtype.byteorder == ">"
    prepared = build_image_input(flux, bands)
    assert prepared.bands == ["DES-G", "DES-R", "DES-Z"]
    assert prepared.token_key == "tok_image" and prepared.survey == "DES"
    assert prepared.flux.shape == (1, 3, AION_IMAGE_SIZE, AION_IMAGE_SIZE)
    assert prepared.flux.dtype == np.float32 and prepared.flux.dtype.isnative and prepared.flux.flags.c_contiguous
    # The centre 96 px of the 256 px cutout, values unchanged.
    np.testing.assert_array_equal(prepared.flux[0], flux[:, 80:176, 80:176].astype(np.float32))
    # A canonical 160 px shard crops to the same pixels.
    canonical = flux[None, :, 48:208, 48:208]
    np.testing.assert_array_equal(build_image_input(canonical, "g,r,z").flux, prepared.flux)

    modality = prepared.to_modality()
    from aion.modalities import LegacySurveyImage

    assert isinstance(modality, LegacySurveyImage)
    assert modality.flux.shape == (1, 3, 96, 96) and modality.flux.dtype == torch.float32


def test_image_input_rejects_bad_cutouts(fits_cutout: tuple[np.ndarray, list[str]]) -> None:
    flux, _ = fits_cutout
    with pytest.raises(ValueError, match="3 bands but 2 band names"):
        build_image_input(flux, ["g", "r"])
    with pytest.raises(ValueError, match="at least 96 px"):
        build_image_input(flux[:, :64, :64], "g,r,z")
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        build_image_input(flux[0], "g")
    masked = np.array(flux, dtype=np.float32)
    masked[1, 120:130, 120:130] = np.nan
    masked[2, 100, 100] = np.inf
    prepared = build_image_input(masked, "g,r,z")
    assert np.isfinite(prepared.flux).all() and prepared.flux[0, 1, 45, 45] == 0.0


def test_missing_weights_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(AionWeightsMissing, match=f"{WEIGHTS_DIR_ENV} is unset") as unset:
        load_aion1_encoder()
    message = str(unset.value)
    for expected in ("config.json", "model.safetensors", "codecs/image/config.json", "polymathic-ai/aion-base",
                     "huggingface-cli download"):
        assert expected in message
    # Through the generic loader too, as the embeddings resource will call it.
    with pytest.raises(AionWeightsMissing):
        load_image_encoder("aion1")

    partial = tmp_path / "aion-base"
    (partial / "codecs" / "image").mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    (partial / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(partial))
    with pytest.raises(AionWeightsMissing) as missing:
        Aion1Encoder()
    text = str(missing.value)
    assert str(partial) in text
    assert "Missing: codecs/image/config.json, codecs/image/model.safetensors (or pytorch_model.bin)." in text
    with pytest.raises(AionWeightsMissing, match="not-there"):
        resolve_weights_dir(tmp_path / "not-there")


def _save_tiny_aion(folder: Path) -> int:
    """A tiny AION-1 of the real architecture (random weights) in the Hugging Face repository layout."""
    from aion import AION
    from aion.codecs import ImageCodec
    from aion.modalities import LegacySurveyImage

    torch.manual_seed(0)
    # 7 * 5^4 = 4375 codes: the vocabulary the AION transformer's tok_image embedding expects.
    codec = ImageCodec(quantizer_levels=[7, 5, 5, 5, 5], hidden_dims=16, n_compressions=2, num_consecutive=1)
    codec.save_pretrained(str(folder), modality=LegacySurveyImage)
    config = {"domains_in": ["tok_image"], "domains_out": ["tok_image"], "dim": 32, "encoder_depth": 1,
              "decoder_depth": 1, "num_heads": 2, "mlp_ratio": 2.0, "norm_bias": False, "act_layer": "GELU",
              "qkv_bias": True, "proj_bias": False, "mlp_bias": False, "qk_norm": False}
    AION(config).save_pretrained(str(folder), config=config)
    assert json.loads((folder / "config.json").read_text())["dim"] == 32
    return 32


def test_encoder_runs_from_a_local_weights_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  fits_cutout: tuple[np.ndarray, list[str]]) -> None:
    torch.set_num_threads(2)
    folder = tmp_path / "aion-tiny"
    dim = _save_tiny_aion(folder)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    encoder = load_image_encoder("aion1", device="cpu", bands="g,r,z")
    assert isinstance(encoder, Aion1Encoder)
    assert encoder.input_kind == "flux" and encoder.dim == dim
    assert encoder.name == "aion1-aion-tiny-DES-G+DES-R+DES-Z"

    flux, bands = fits_cutout
    canonical = np.stack([flux[:, 48:208, 48:208], flux[:, ::-1, :][:, 48:208, 48:208]]).astype(np.float32)
    embeddings = encoder.encode_batch(canonical)
    assert embeddings.shape == (2, dim) and embeddings.dtype == np.float32 and np.isfinite(embeddings).all()
    assert not np.allclose(embeddings[0], embeddings[1])  # a flipped galaxy tokenises differently
    np.testing.assert_allclose(encoder.encode_batch(canonical[:1])[0], embeddings[0], atol=1e-4)

    # Another release's band set reuses the loaded model.
    gr = encoder.with_bands("g,r")
    assert gr.model is encoder.model and gr.bands == ["DES-G", "DES-R"]
    assert gr.encode_batch(canonical[:, :2]).shape == (2, dim)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "aion-tiny"
    _save_tiny_aion(folder)
    mismatched = tmp_path / "aion-mismatched"
    shutil.copytree(folder, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["domains_in"] = ["tok_image", "tok_z"]  # the file has no weights for a redshift input
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match=r"does not fit.*tok_z"):
        Aion1Encoder(weights_dir=mismatched, device="cpu")
