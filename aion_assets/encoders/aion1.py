"""AION-1 (Polymathic AI, PyPI ``polymathic-aion``) as an image encoder for multi-band flux cutouts.

Pipeline: flux [B, C, H, W] + band names -> AION band names (DES-G/R/I/Z for Legacy Survey, HSC-G..Y for HSC)
-> the AION image codec (centre crop to 96 px, per-band clamp, arcsinh range compression, MagViT encoder, finite
scalar quantiser) -> 576 image tokens -> the AION transformer encoder -> token embeddings, mean-pooled to one
vector per cutout (the pooling the AION README uses for similarity search).

The weights are gated on Hugging Face and are NOT shipped; a user who has them points ``AION_AION1_WEIGHTS_DIR``
at a local copy of ``polymathic-ai/aion-base``. Everything runs from that directory, never from the network:
the files are read directly (config.json + model.safetensors) because the package's own ``from_pretrained``
for codecs looks for ``codecs/image/config.json`` with ``os.listdir`` and so never finds it in a local folder.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aion_assets.platform.settings import get_settings

if TYPE_CHECKING:
    import torch

WEIGHTS_DIR_ENV = "AION_AION1_WEIGHTS_DIR"
HF_REPO = "polymathic-ai/aion-base"
# AION's image codec centre-crops to this side; the transformer sees (96 / 4)^2 = 576 tokens per image.
AION_IMAGE_SIZE = 96
AION_IMAGE_TOKENS = 576
WEIGHT_FILE_CHOICES = ("model.safetensors", "pytorch_model.bin")
CODEC_SUBDIR = "codecs/image"

# Survey -> AION band prefix. Legacy Survey imaging is DECam (DES filters) in the south and is modelled by AION as
# DES bands with zero point 22.5 (nanomaggies); HSC fluxes use zero point 27 and are rescaled by the codec.
SURVEY_BAND_PREFIX = {
    "legacysurvey": "DES",
    "legacy": "DES",
    "ls": "DES",
    "decals": "DES",
    "des": "DES",
    "hsc": "HSC",
}
SURVEY_BANDS = {"DES": ("G", "R", "I", "Z"), "HSC": ("G", "R", "I", "Z", "Y")}


class AionWeightsMissing(FileNotFoundError):
    """AION-1 weights are not available locally."""


def expected_weight_files() -> list[str]:
    """Files (relative to the weights directory) the encoder reads; each weight file may be safetensors or .bin."""
    return [
        "config.json",
        "model.safetensors (or pytorch_model.bin)",
        f"{CODEC_SUBDIR}/config.json",
        f"{CODEC_SUBDIR}/model.safetensors (or pytorch_model.bin)",
    ]


def _weight_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILE_CHOICES:
        if (folder / name).is_file():
            return folder / name
    return None


def missing_weight_files(weights_dir: Path) -> list[str]:
    missing = []
    for folder, label in ((weights_dir, ""), (weights_dir / CODEC_SUBDIR, f"{CODEC_SUBDIR}/")):
        if not (folder / "config.json").is_file():
            missing.append(f"{label}config.json")
        if _weight_file(folder) is None:
            missing.append(f"{label}model.safetensors (or pytorch_model.bin)")
    return missing


def _weights_help(weights_dir: Path | None, missing: Sequence[str]) -> str:
    where = f"in {weights_dir}" if weights_dir is not None else f"(no directory configured: {WEIGHTS_DIR_ENV} is unset)"
    return (
        f"AION-1 weights not found {where}. Missing: {', '.join(missing)}. "
        f"The encoder needs a local copy of the Hugging Face repository {HF_REPO} laid out as: "
        f"{'; '.join(expected_weight_files())}. The weights are gated: request access at "
        f"https://huggingface.co/{HF_REPO}, then on a machine with network run "
        f"`huggingface-cli download {HF_REPO} --local-dir /path/to/aion-base` and set "
        f"{WEIGHTS_DIR_ENV}=/path/to/aion-base (or pass weights_dir). Nothing is downloaded at run time."
    )


def resolve_weights_dir(weights_dir: str | Path | None = None) -> Path:
    """The configured weights directory, checked: raises AionWeightsMissing naming the missing files."""
    configured = weights_dir if weights_dir is not None else get_settings().aion1_weights_dir
    if not configured:
        raise AionWeightsMissing(_weights_help(None, expected_weight_files()))
    path = Path(configured).expanduser()
    missing = expected_weight_files() if not path.is_dir() else missing_weight_files(path)
    if missing:
        raise AionWeightsMissing(_weights_help(path, missing))
    return path


def aion_band_names(bands: Sequence[str] | str, survey: str = "legacysurvey") -> list[str]:
    """Map cutout band names ('g,r,z' or ['g', 'r', 'z']) to AION's ('DES-G', 'DES-R', 'DES-Z').

    Names already in AION form ('DES-R', 'HSC-I') pass through; a mix of surveys is refused because the codec
    takes one zero point per image.
    """
    items = [b.strip() for b in (bands.split(",") if isinstance(bands, str) else bands) if b.strip()]
    if not items:
        raise ValueError("no band names given")
    prefix = SURVEY_BAND_PREFIX.get(survey.strip().lower().replace(" ", "").replace("_", "").replace("-", ""))
    if prefix is None:
        raise ValueError(f"unknown survey {survey!r} for AION-1: use one of {sorted(SURVEY_BAND_PREFIX)}")
    mapped = []
    for band in items:
        if "-" in band:
            band_prefix, _, letter = band.upper().partition("-")
        else:
            band_prefix, letter = prefix, band.upper()
        if band_prefix not in SURVEY_BANDS or letter not in SURVEY_BANDS[band_prefix]:
            allowed = ", ".join(f"{p}-{b}" for p, letters in SURVEY_BANDS.items() for b in letters)
            raise ValueError(f"band {band!r} has no AION-1 equivalent for survey {survey!r}; AION knows {allowed}")
        mapped.append(f"{band_prefix}-{letter}")
    if len({m.split("-")[0] for m in mapped}) > 1:
        raise ValueError(f"bands {mapped} mix surveys; AION-1 takes one survey per image")
    if len(set(mapped)) != len(mapped):
        raise ValueError(f"duplicate bands {mapped}")
    return mapped


@dataclass(frozen=True)
class AionImageInput:
    """What the AION image codec takes: flux [B, C, 96, 96] float32 and AION band names, C == len(bands)."""

    flux: np.ndarray
    bands: list[str]

    @property
    def survey(self) -> str:
        return self.bands[0].split("-")[0]

    @property
    def token_key(self) -> str:
        return "tok_image_hsc" if self.survey == "HSC" else "tok_image"

    def to_modality(self, device: str | torch.device = "cpu") -> Any:
        """The ``aion.modalities`` object (LegacySurveyImage or HSCImage) for this input."""
        import torch
        from aion.modalities import HSCImage, LegacySurveyImage

        modality = HSCImage if self.survey == "HSC" else LegacySurveyImage
        return modality(flux=torch.from_numpy(self.flux).to(device), bands=list(self.bands))


def build_image_input(flux: np.ndarray, bands: Sequence[str] | str, survey: str = "legacysurvey") -> AionImageInput:
    """AION image input from flux cutouts: [C, H, W] or [B, C, H, W] in the survey's native flux units
    (nanomaggies for Legacy Survey).

    Centre-crops to 96 px (AION's input; at Legacy Survey's 0.262"/px a 25" field), converts to native-endian
    float32 (FITS data are big-endian) and replaces non-finite pixels (masked or off-footprint) with 0, which the
    codec would otherwise propagate into every token.
    """
    array = np.asarray(flux)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected flux [C, H, W] or [B, C, H, W], got shape {array.shape}")
    mapped = aion_band_names(bands, survey)
    if array.shape[1] != len(mapped):
        raise ValueError(f"flux has {array.shape[1]} bands but {len(mapped)} band names were given: {mapped}")
    height, width = array.shape[-2:]
    if height < AION_IMAGE_SIZE or width < AION_IMAGE_SIZE:
        raise ValueError(f"AION-1 needs cutouts of at least {AION_IMAGE_SIZE} px, got {height}x{width}")
    top, left = (height - AION_IMAGE_SIZE) // 2, (width - AION_IMAGE_SIZE) // 2
    crop = array[:, :, top:top + AION_IMAGE_SIZE, left:left + AION_IMAGE_SIZE]
    crop = np.array(crop, dtype=np.float32, order="C")  # a native-endian, writable copy
    np.nan_to_num(crop, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return AionImageInput(flux=crop, bands=mapped)


def _read_state_dict(weight_file: Path) -> dict[str, Any]:
    import torch

    if weight_file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weight_file))
    return torch.load(weight_file, map_location="cpu", weights_only=True)


def _named_tensors(module: torch.nn.Module) -> list[tuple[str, Any]]:
    return [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]


def _load_checked(module: torch.nn.Module, weight_file: Path) -> None:
    # Extra entries in the file are tolerated (as huggingface_hub's loader does); a missing one would leave part
    # of the network at random initialisation, so that is refused.
    state = _read_state_dict(weight_file)
    missing, _unexpected = module.load_state_dict(state, strict=False)
    # Tied tensors (AION shares modality embeddings between encoder and decoder) are saved once by safetensors,
    # under one of their names; a missing name whose tensor was loaded under another is not missing.
    loaded_tensors = {id(t) for name, t in _named_tensors(module) if name in state}
    missing = [name for name, t in _named_tensors(module) if name in set(missing) and id(t) not in loaded_tensors]
    if missing:
        raise RuntimeError(f"{weight_file} does not fit the AION model built from its config: missing {missing[:8]}")


def load_aion_modules(weights_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(image codec, AION model, model config) from a local weights directory, both in eval mode on CPU."""
    from aion import AION
    from aion.codecs import ImageCodec

    codec_dir = weights_dir / CODEC_SUBDIR
    codec = ImageCodec(**json.loads((codec_dir / "config.json").read_text()))
    _load_checked(codec, _weight_file(codec_dir))  # type: ignore[arg-type]
    config = json.loads((weights_dir / "config.json").read_text())
    model = AION(config)
    _load_checked(model, _weight_file(weights_dir))  # type: ignore[arg-type]
    return codec.eval().requires_grad_(False), model.eval().requires_grad_(False), config


class Aion1Encoder:
    """AION-1 encoder for float32 flux cutouts [B, C, H, W] of one survey; ``bands`` name the C channels."""

    input_kind = "flux"

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        bands: Sequence[str] | str = ("g", "r", "z"),
        survey: str = "legacysurvey",
        device: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.weights_dir = resolve_weights_dir(weights_dir)  # fail fast, before importing the model code
        import torch

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.survey = survey
        self.bands = aion_band_names(bands, survey)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.codec, self.model, config = _load_modules_cached(self.weights_dir, str(self.device))
        self._dim = int(config.get("dim", 768))
        token_key = "tok_image_hsc" if self.bands[0].startswith("HSC") else "tok_image"
        if token_key not in self.model.encoder_embeddings:
            raise ValueError(f"this AION-1 checkpoint has no encoder input {token_key!r} for {self.bands}")

    @property
    def name(self) -> str:
        return f"aion1-{self.weights_dir.name}-{'+'.join(self.bands)}"

    @property
    def dim(self) -> int:
        return self._dim

    def with_bands(self, bands: Sequence[str] | str, survey: str | None = None) -> Aion1Encoder:
        """The same loaded model for another band set (shards of another release)."""
        clone = object.__new__(Aion1Encoder)
        clone.__dict__.update(self.__dict__)
        clone.survey = survey or self.survey
        clone.bands = aion_band_names(bands, clone.survey)
        return clone

    def preprocess(self, batch: np.ndarray) -> AionImageInput:
        return build_image_input(batch, self.bands, self.survey)

    def forward(self, prepared: AionImageInput) -> np.ndarray:
        import torch

        with torch.inference_mode():
            modality = prepared.to_modality(self.device)
            tokens = self.codec.encode(modality)
            hidden = self.model.encode({prepared.token_key: tokens}, num_encoder_tokens=tokens.shape[1])
            pooled = hidden.float().mean(dim=1)
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.forward(self.preprocess(batch))


_MODULE_CACHE: dict[tuple[str, str], tuple[Any, Any, dict[str, Any]]] = {}
_MODULE_LOCK = threading.Lock()


def _load_modules_cached(weights_dir: Path, device: str) -> tuple[Any, Any, dict[str, Any]]:
    key = (str(weights_dir.resolve()), device)
    with _MODULE_LOCK:
        if key not in _MODULE_CACHE:
            codec, model, config = load_aion_modules(weights_dir)
            _MODULE_CACHE[key] = (codec.to(device), model.to(device), config)
        return _MODULE_CACHE[key]


def load_aion1_encoder(
    weights_dir: str | Path | None = None, device: str | None = None, **options: Any
) -> Aion1Encoder:
    """AION-1 encoder from ``weights_dir`` or ``$AION_AION1_WEIGHTS_DIR``; raises AionWeightsMissing without them."""
    return Aion1Encoder(weights_dir=weights_dir, device=device, **options)
