"""Decode one survey cutout into the canonical arrays. Pure: numpy, Pillow, astropy, h5py; no dagster.

Canonical form: ``rgb`` uint8 [160, 160, 3] for every source, plus ``flux`` float32 [C, 160, 160] when the source
carries calibrated bands (FITS, HDF5). Every way a cutout can be unusable raises :class:`CutoutRejected` with a
reason a person can act on; the caller quarantines it.

``rgb`` is THE image of a cutout: the image encoder, the galleries, the describer and the re-ranker all read it,
so a flux cutout is rendered once, here, by :func:`flux_to_rgb`. RGB JPEG/PNG sources keep their own pixels (only
centre-cropped and resized to 160 px when they are not that size already).
"""

from __future__ import annotations

import io
import math
import os
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CANONICAL_SIZE = 160
RGB_SUFFIXES = {".jpg", ".jpeg", ".png"}
FITS_SUFFIXES = {".fits", ".fit", ".fts", ".fits.gz", ".fz"}
# Above this fraction of non-finite pixels a cutout carries too little signal to keep; below it, the holes
# (masked pixels, chip gaps) are set to 0 so that downstream models never see NaN.
MAX_NONFINITE_FRACTION = 0.5

# -- the one rendering of a flux cutout (parameters fixed, never taken from the image) -----------------------------
# Per-band scales multiplied into the flux (nanomaggies) before the stretch, so that a typical galaxy is
# neutral-to-warm rather than dominated by the red band: the Legacy Survey viewer's values (legacypipe's
# ``sdss_rgb``: g 6.0, r 3.4, i 3.0, z 2.2). A band not listed keeps its flux (scale 1.0).
BAND_SCALES: dict[str, float] = {"g": 6.0, "r": 3.4, "i": 3.0, "z": 2.2}
# astropy's Lupton stretch is f(x) = asinh(Q x / stretch) * 0.1 / asinh(0.1 Q) on the scaled mean intensity x.
# Q / stretch = 20 and Q = 4.6 make it the viewer's asinh(20 x) / sqrt(20) to within 1%: the sky noise of a
# Legacy Survey cutout stays dark and a bright core reaches full colour near x = 2.1.
LUPTON_Q = 4.6
LUPTON_STRETCH = 0.23
# Names the rendering in each shard's ingest marker: a shard rendered under other parameters is ingested again.
FLUX_RENDERING = (f"make_lupton_rgb Q={LUPTON_Q} stretch={LUPTON_STRETCH} scales "
                  + ",".join(f"{band}={scale}" for band, scale in BAND_SCALES.items()))

GZIP_MAGIC = b"\x1f\x8b"
FITS_BLOCK = 2880  # a FITS header or data unit is a whole number of 2880-byte blocks of 80-character cards
FITS_CARD = 80
INFLATE_STEP = 1 << 20  # gzip is inflated this many bytes at a time, so a bomb stops within one step of the cap
# A cutout's header is a few blocks; one without END in this many (2.9 MB) is damaged or hostile, and is not
# scanned card by card any further.
MAX_HEADER_BLOCKS = 1000


class CutoutRejected(ValueError):
    """A cutout that cannot enter the canonical shard; ``reason`` is what the quarantine table records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- budgets -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CutoutBudget:
    """How large one source cutout may be, checked before it is decoded: a 2 MB tile-compressed FITS of zeros
    can declare 15000 x 15000 pixels, and decoding it would take gigabytes per worker.

    ``max_pixels`` bounds width x height x bands (what the decoded arrays hold); ``max_bytes`` bounds the file
    and its decompressed data. Both come from the settings ``AION_MAX_CUTOUT_PIXELS`` / ``AION_MAX_CUTOUT_BYTES``.
    """

    max_pixels: int
    max_bytes: int

    @classmethod
    def from_settings(cls) -> CutoutBudget:
        from aion_assets.platform.settings import get_settings

        settings = get_settings()
        return cls(max_pixels=settings.max_cutout_pixels, max_bytes=settings.max_cutout_bytes)

    def check_file(self, size: int) -> None:
        if size > self.max_bytes:
            raise CutoutRejected(f"too large: the file is {size:,} bytes, over the byte budget of "
                                 f"{self.max_bytes:,} (AION_MAX_CUTOUT_BYTES)")

    def check_decoded(self, what: str, pixels: int, decoded_bytes: int) -> None:
        """``what`` (e.g. ``3x15000x15000 float32``) holds ``pixels`` samples in ``decoded_bytes`` once decoded."""
        if pixels > self.max_pixels:
            raise CutoutRejected(f"too large: {what} is {pixels:,} pixels x bands, over the pixel budget of "
                                 f"{self.max_pixels:,} (AION_MAX_CUTOUT_PIXELS)")
        if decoded_bytes > self.max_bytes:
            raise CutoutRejected(f"too large: {what} decodes to {decoded_bytes:,} bytes, over the byte budget of "
                                 f"{self.max_bytes:,} (AION_MAX_CUTOUT_BYTES)")


def _budget(budget: CutoutBudget | None) -> CutoutBudget:
    return budget if budget is not None else CutoutBudget.from_settings()


def read_source(path: Path, budget: CutoutBudget | None = None) -> bytes:
    """A cutout file's bytes, refusing (before reading any) a file larger than the byte budget."""
    _budget(budget).check_file(path.stat().st_size)
    return path.read_bytes()


@dataclass
class DecodedCutout:
    rgb: np.ndarray  # uint8 [160, 160, 3]
    flux: np.ndarray | None  # float32 [C, 160, 160] or None for RGB-only sources
    bands: str  # 'rgb' or the flux band names joined by commas ('g,r,z')
    width: int  # of the source image, before resizing
    height: int
    nonfinite_fraction: float = 0.0


# -- paths ---------------------------------------------------------------------------------------------------------
def resolve_inside(release_dir: Path, relative: str) -> Path:
    """The file a catalog row names, refusing anything that leaves the release folder.

    Absolute paths, ``..`` segments and symlinks that point outside are all rejected: a catalog is user input and
    must not make ingestion read (and publish into the lake) arbitrary files of the machine.
    """
    if relative is None or not str(relative).strip():
        raise CutoutRejected("empty image path")
    text = str(relative).strip()
    if os.path.isabs(text) or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise CutoutRejected(f"image path {text!r} is absolute: paths must stay inside the release folder")
    root = release_dir.resolve()
    candidate = (root / text).resolve()
    if not candidate.is_relative_to(root):
        raise CutoutRejected(f"image path {text!r} escapes the release folder")
    if not candidate.exists():
        if (root / text).is_symlink():
            raise CutoutRejected(f"image path {text!r} is a broken symlink")
        raise CutoutRejected(f"missing file {text!r}")
    if not candidate.is_file():
        raise CutoutRejected(f"image path {text!r} is not a file")
    return candidate


def source_format(path: str | Path) -> str:
    name = str(path).lower()
    if any(name.endswith(suffix) for suffix in FITS_SUFFIXES):
        return "fits"
    if Path(name).suffix in RGB_SUFFIXES:
        return "rgb"
    if Path(name).suffix in {".h5", ".hdf5"}:
        return "hdf5"
    return "unknown"


def parse_bands(value: object) -> list[str] | None:
    """Band names from a manifest value: a list (``["g","r","z"]``), ``"g,r,z"`` or a run of letters (``"grz"``)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (list, tuple)):
        return [str(band).strip() for band in value]
    text = str(value).strip()
    if "," in text:
        return [band.strip() for band in text.split(",") if band.strip()]
    return list(text)


# -- resizing --------------------------------------------------------------------------------------------------
def _centre_square(height: int, width: int) -> tuple[int, int, int]:
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def resize_rgb(image: Image.Image, size: int = CANONICAL_SIZE) -> np.ndarray:
    """Centre-crop to a square, then LANCZOS to ``size``: the object sits at the centre of a survey cutout."""
    top, left, side = _centre_square(image.height, image.width)
    square = image.crop((left, top, left + side, top + side))
    if side != size:
        square = square.resize((size, size), Image.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def resize_flux(flux: np.ndarray, size: int = CANONICAL_SIZE) -> np.ndarray:
    """Per band, centre-crop to a square and resample to ``size`` (Pillow's float mode keeps float32 precision)."""
    _, height, width = flux.shape
    top, left, side = _centre_square(height, width)
    square = flux[:, top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square, dtype=np.float32)
    bands = [
        np.asarray(Image.fromarray(np.ascontiguousarray(band, dtype=np.float32), mode="F").resize(
            (size, size), Image.LANCZOS), dtype=np.float32)
        for band in square
    ]
    return np.stack(bands)


# -- flux handling -----------------------------------------------------------------------------------------------
def clean_flux(flux: np.ndarray) -> tuple[np.ndarray, float]:
    """Reject mostly-empty cutouts; zero the sparse non-finite pixels of the rest. Returns (flux, fraction)."""
    flux = np.asarray(flux, dtype=np.float32)
    if flux.size == 0:
        raise CutoutRejected("empty image array")
    finite = np.isfinite(flux)
    fraction = 1.0 - float(finite.mean())
    if fraction >= 1.0:
        raise CutoutRejected("non-finite values: every pixel is NaN or infinite")
    if fraction > MAX_NONFINITE_FRACTION:
        raise CutoutRejected(
            f"non-finite values: {fraction:.0%} of pixels are NaN or infinite (limit {MAX_NONFINITE_FRACTION:.0%})"
        )
    if fraction > 0:
        flux = np.where(finite, flux, np.float32(0.0))
    return flux, fraction


def channel_bands(bands: Sequence[str] | None, count: int) -> tuple[int, int, int]:
    """Indexes of the bands shown as (red, green, blue).

    g, r, z (or g, r, i, or u, g, r) map to blue, green, red by name, whatever their order in the file; without
    such names the last three bands, reddest last (the usual survey order). One band is grey; with two, the
    redder shows as red and green, the bluer as blue.
    """
    names = [b.strip().lower() for b in bands] if bands and len(bands) == count else []
    for blue, green, red in (("g", "r", "z"), ("g", "r", "i"), ("u", "g", "r")):
        if {blue, green, red} <= set(names):
            return names.index(red), names.index(green), names.index(blue)
    if count >= 3:
        return count - 1, count - 2, count - 3
    return count - 1, count - 1, 0


def flux_to_rgb(flux: np.ndarray, bands: Sequence[str] | None = None) -> np.ndarray:
    """float [C, H, W] flux -> uint8 [H, W, 3]: the arcsinh colour composite of Lupton et al. (2004, PASP 116, 133).

    astropy's ``make_lupton_rgb`` with the fixed :data:`BAND_SCALES`, :data:`LUPTON_Q` and :data:`LUPTON_STRETCH`
    (black at flux 0, negative sky noise clipped, a saturated pixel keeps its colour). Nothing depends on the
    image itself, so one object renders the same in every shard and a faint object stays faint.
    """
    from astropy.visualization import make_lupton_rgb

    if flux.ndim != 3:
        raise ValueError(f"expected flux [bands, height, width], got shape {flux.shape}")
    names = [b.strip().lower() for b in bands] if bands and len(bands) == flux.shape[0] else []
    scales = [BAND_SCALES.get(name, 1.0) for name in names] or [1.0] * flux.shape[0]
    red, green, blue = (np.nan_to_num(np.asarray(flux[index], dtype=np.float64)) * scales[index]
                        for index in channel_bands(names, flux.shape[0]))
    # Only stretch and Q are passed: astropy 6, 7 and 8 give them the same meaning (black point 0 by default).
    # astropy computes f(I)/I before masking I == 0 (blank sky, zeroed NaN holes): those pixels are black anyway.
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = make_lupton_rgb(red, green, blue, stretch=LUPTON_STRETCH, Q=LUPTON_Q)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _from_flux(flux: np.ndarray, bands: list[str], expected: Sequence[str] | None) -> DecodedCutout:
    if flux.ndim == 2:
        flux = flux[None]
    if flux.ndim != 3:
        raise CutoutRejected(f"unexpected image shape {tuple(flux.shape)}: need [bands, height, width]")
    if expected is not None and flux.shape[0] != len(expected):
        raise CutoutRejected(
            f"wrong band count: {flux.shape[0]} band(s), manifest expects {len(expected)} ({','.join(expected)})"
        )
    if expected is not None:
        bands = list(expected)
    elif len(bands) != flux.shape[0]:
        bands = [f"b{i}" for i in range(flux.shape[0])]
    _, height, width = flux.shape
    if min(height, width) < 8:
        raise CutoutRejected(f"image too small: {width}x{height}")
    flux, fraction = clean_flux(flux)
    canonical = resize_flux(flux)
    return DecodedCutout(
        rgb=flux_to_rgb(canonical, bands), flux=canonical, bands=",".join(bands), width=int(width),
        height=int(height), nonfinite_fraction=fraction,
    )


# -- RGB images ----------------------------------------------------------------------------------------------------
def _bytes_per_sample(mode: str) -> int:
    if mode in ("I", "F"):
        return 4
    return 2 if "16" in mode else 1


def decode_rgb(data: bytes, budget: CutoutBudget | None = None) -> DecodedCutout:
    """JPEG/PNG bytes -> canonical RGB. ``load()`` forces a full decode so a truncated file fails here; the
    size in the file's header is held to the budget before that."""
    budget = _budget(budget)
    budget.check_file(len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            bands = len(image.getbands())
            pixels = image.width * image.height * bands
            budget.check_decoded(f"{bands}x{image.height}x{image.width} {image.mode}", pixels,
                                 pixels * _bytes_per_sample(image.mode))
            image.load()
            width, height = image.size
            if image.mode in ("I;16", "I", "F"):
                raise CutoutRejected(f"unsupported image mode {image.mode}: expected an 8-bit colour image")
            rgb_image = image.convert("RGB")
    except CutoutRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CutoutRejected(f"does not decode: {type(error).__name__}: {error}") from error
    if min(width, height) < 8:
        raise CutoutRejected(f"image too small: {width}x{height}")
    return DecodedCutout(rgb=resize_rgb(rgb_image), flux=None, bands="rgb", width=width, height=height)


# -- FITS ----------------------------------------------------------------------------------------------------------
def _header_band(header) -> str | None:
    for key in ("FILTER", "BAND", "FILTNAM"):
        value = header.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _card_int(cards: dict[str, str], keyword: str, default: int | None = None) -> int:
    raw = cards.get(keyword)
    if raw is None:
        if default is None:
            raise CutoutRejected(f"does not decode: FITS header lacks {keyword}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise CutoutRejected(f"does not decode: FITS header {keyword} = {raw!r} is not an integer") from None


def _read_header(data: bytes | bytearray, offset: int) -> tuple[dict[str, str], int] | None:
    """The value cards of the header at ``offset`` and where its data starts; None when it does not end within
    ``data`` (a truncated file, or a gzip stream not yet inflated that far)."""
    limit = min(len(data), offset + MAX_HEADER_BLOCKS * FITS_BLOCK)
    cards: dict[str, str] = {}
    for position in range(offset, limit - FITS_CARD + 1, FITS_CARD):
        card = bytes(data[position:position + FITS_CARD]).decode("ascii", errors="replace")
        keyword = card[:8].strip()
        if keyword == "END":
            return cards, offset + math.ceil((position + FITS_CARD - offset) / FITS_BLOCK) * FITS_BLOCK
        if card[8:10] == "= " and keyword not in cards:
            cards[keyword] = card[10:].split("/", 1)[0].strip()
    if limit < len(data):
        raise CutoutRejected(f"does not decode: a FITS header runs past {MAX_HEADER_BLOCKS:,} blocks without END")
    return None


def _image_size(cards: dict[str, str]) -> tuple[str, int, int] | None:
    """(shape and type, pixels, decoded bytes) of an image HDU, or of the image a tile-compressed table holds
    (ZNAXISn, ZBITPIX); None for other HDUs (tables, an empty primary)."""
    compressed = cards.get("ZIMAGE") == "T"
    prefix = "Z" if compressed else ""
    is_image = "SIMPLE" in cards or cards.get("XTENSION", "").strip("' ") == "IMAGE"
    if not (compressed or is_image):
        return None
    axes = [_card_int(cards, f"{prefix}NAXIS{i}") for i in range(_card_int(cards, f"{prefix}NAXIS"), 0, -1)]
    if not axes:
        return None
    bitpix = _card_int(cards, f"{prefix}BITPIX")
    pixels = math.prod(axes)
    # Scaled integers (BSCALE/BZERO) decode to float32 at least: count a sample as no fewer than 4 bytes.
    sample_bytes = max(abs(bitpix) // 8, 4 if "BSCALE" in cards or "BZERO" in cards else 1)
    kind = "tile-compressed " if compressed else ""
    return f"{kind}{'x'.join(map(str, axes))} BITPIX {bitpix}", pixels, pixels * sample_bytes


def _hdu_data_bytes(cards: dict[str, str]) -> int:
    """Bytes the data unit takes in the file (the standard's |BITPIX|/8 x GCOUNT x (PCOUNT + NAXIS1 x ...))."""
    naxis = _card_int(cards, "NAXIS")
    if naxis == 0:
        return 0
    axes = math.prod(_card_int(cards, f"NAXIS{i}") for i in range(1, naxis + 1))
    return abs(_card_int(cards, "BITPIX")) // 8 * _card_int(cards, "GCOUNT", 1) * (_card_int(cards, "PCOUNT", 0) + axes)


def check_fits_budget(data: bytes | bytearray, budget: CutoutBudget) -> None:
    """Refuse FITS whose headers declare more than the budget: every image HDU (a tile-compressed one by its
    ZNAXISn) counts towards the pixels and the decoded bytes. Only headers are read; data units are skipped.

    ``data`` may be the first part of a file (a gzip stream being inflated): the headers read so far count.
    """
    if len(data) >= 6 and bytes(data[:6]) != b"SIMPLE":
        raise CutoutRejected("does not decode: not a FITS file (no SIMPLE card at its start)")
    shapes: list[str] = []
    pixels = decoded_bytes = 0
    offset = 0
    while offset < len(data):
        if offset > 0 and len(data) - offset >= 8 and bytes(data[offset:offset + 8]) != b"XTENSION":
            break  # what follows the last HDU is not one (astropy ignores such trailing bytes too)
        header = _read_header(data, offset)
        if header is None:
            break
        cards, data_start = header
        size = _image_size(cards)
        if size is not None:
            shapes.append(size[0])
            pixels += size[1]
            decoded_bytes += size[2]
            budget.check_decoded(" + ".join(shapes), pixels, decoded_bytes)
        offset = data_start + math.ceil(_hdu_data_bytes(cards) / FITS_BLOCK) * FITS_BLOCK


def gunzip_within(data: bytes, budget: CutoutBudget, inspect: Callable[[bytearray], None] | None = None) -> bytes:
    """Inflate a gzip file a step at a time, refusing it once the output passes the byte budget: a gzip bomb
    costs at most the budget, never what it would inflate to. ``inspect`` sees the output after each step (the
    FITS header check, which refuses a declared oversize image within the first step)."""
    inflated = bytearray()
    remaining = data
    while remaining:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # one gzip member; a file may concatenate several
        pending = remaining
        while not inflater.eof:
            step = inflater.decompress(pending, INFLATE_STEP)
            pending = inflater.unconsumed_tail
            if not step and not pending:
                raise CutoutRejected("does not decode: the gzip stream is truncated")
            inflated += step
            if inspect is not None:  # first: what the content declares is the more telling reason
                inspect(inflated)
            if len(inflated) > budget.max_bytes:
                raise CutoutRejected(f"too large: the gzip stream inflates past the byte budget of "
                                     f"{budget.max_bytes:,} bytes (AION_MAX_CUTOUT_BYTES)")
        remaining = inflater.unused_data
        if not remaining.strip(b"\0"):
            break  # zero padding after the last member (tape-style blocking) is not another member
    return bytes(inflated)


def decode_fits(data: bytes, expected_bands: Sequence[str] | None = None,
                budget: CutoutBudget | None = None) -> DecodedCutout:
    """Multi-band FITS: one image HDU with bands on the first axis, or one 2-D HDU per band. Plain, gzipped
    (``.fits.gz``) or tile-compressed (``.fz``); held to the budget from its headers before any decoding."""
    budget = _budget(budget)
    budget.check_file(len(data))
    try:
        if data[:2] == GZIP_MAGIC:
            data = gunzip_within(data, budget, inspect=lambda inflated: check_fits_budget(inflated, budget))
        check_fits_budget(data, budget)
    except zlib.error as error:
        raise CutoutRejected(f"does not decode: gzip: {error}") from error
    from astropy.io import fits  # after the budget: a refused file costs no astropy import

    try:
        with warnings.catch_warnings():
            # astropy only warns on a short file and may hand back padded data: a truncated cutout is refused.
            warnings.filterwarnings("error", message=".*truncated.*")
            hdus = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False)
            images = [hdu for hdu in hdus if getattr(hdu, "is_image", False) and hdu.data is not None]
            if not images:
                raise CutoutRejected("does not decode: FITS file holds no image data")
            if images[0].data.ndim not in (2, 3):
                raise CutoutRejected(f"unexpected image shape {images[0].data.shape}: need [bands, height, width]")
            if images[0].data.ndim == 3:
                hdu = images[0]
                flux = np.asarray(hdu.data, dtype=np.float32)
                header = hdu.header
                # Legacy Survey style: BAND0..BANDn per plane, or BANDS='grz' for the whole cube.
                names = [header.get(f"BAND{i}") for i in range(flux.shape[0])]
                if all(name is not None and str(name).strip() for name in names):
                    bands = [str(name).strip() for name in names]
                else:
                    bands = parse_bands(str(header.get("BANDS") or header.get("FILTER") or "").strip()) or []
            else:
                planes = [hdu for hdu in images if hdu.data.ndim == 2]
                shapes = {plane.data.shape for plane in planes}
                if len(shapes) != 1:
                    raise CutoutRejected(f"band HDUs differ in shape: {sorted(shapes)}")
                flux = np.stack([np.asarray(plane.data, dtype=np.float32) for plane in planes])
                bands = [_header_band(plane.header) or plane.name or "" for plane in planes]
                bands = [b for b in bands if b and b != "PRIMARY"]
            hdus.close()
    except CutoutRejected:
        raise
    except Exception as error:  # astropy raises a zoo of types on damaged files; all mean "does not decode"
        raise CutoutRejected(f"does not decode: {type(error).__name__}: {error}") from error
    return _from_flux(flux, bands, expected_bands)


def decode_file(data: bytes, name: str, expected_bands: Sequence[str] | None = None,
                budget: CutoutBudget | None = None) -> DecodedCutout:
    """Dispatch on the file name: RGB raster or FITS flux, each held to the budget (the settings' by default)."""
    budget = _budget(budget)
    kind = source_format(name)
    if kind == "rgb":
        return decode_rgb(data, budget)
    if kind == "fits":
        return decode_fits(data, expected_bands, budget)
    # Unknown suffix: sniff, since some archives serve FITS (or gzipped FITS) without an extension.
    if data[:6] == b"SIMPLE" or data[:2] == GZIP_MAGIC:
        return decode_fits(data, expected_bands, budget)
    return decode_rgb(data, budget)


# -- HDF5 (Multimodal-Universe style) --------------------------------------------------------------------------------
@dataclass
class Hdf5Row:
    index: int
    object_id: str
    ra: float | None
    dec: float | None
    flux: np.ndarray  # float32 [C, H, W] as stored


def _decode_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def hdf5_bands(handle) -> list[str] | None:
    """Band names from an attribute of the image dataset or file, or a ``bands`` dataset."""
    for holder in (handle["image_array"].attrs, handle.attrs):
        for key in ("bands", "band_names", "image_band"):
            if key in holder:
                raw = holder[key]
                if isinstance(raw, (str, bytes)):
                    return parse_bands(_decode_text(raw))
                return [_decode_text(v) for v in np.asarray(raw).ravel()]
    for key in ("bands", "image_band"):
        if key in handle:
            raw = np.asarray(handle[key][()])
            if raw.ndim == 2:  # per-object band lists (Multimodal Universe stores one per row): take the first
                raw = raw[0]
            return [_decode_text(v) for v in np.atleast_1d(raw)]
    return None


def check_hdf5_rows(path: Path, images, budget: CutoutBudget) -> None:  # images: an h5py.Dataset [N, C, H, W]
    """Every row of an HDF5 image array has one shape, so the budget is checked once, from the dataset's shape,
    dtype and chunking, before any row is read: reading one row decompresses every chunk it touches."""
    itemsize = max(int(images.dtype.itemsize), 4)  # rows are read as float32
    row = tuple(int(n) for n in images.shape[1:])
    pixels = math.prod(row)
    budget.check_decoded(f"HDF5 file {path.name}: each row ({'x'.join(map(str, row))} {images.dtype})", pixels,
                         pixels * itemsize)
    if images.chunks is not None:
        chunk_bytes = math.prod(images.chunks) * int(images.dtype.itemsize)
        if chunk_bytes > budget.max_bytes:
            raise CutoutRejected(f"too large: HDF5 file {path.name} stores its images in chunks of "
                                 f"{chunk_bytes:,} bytes, over the byte budget of {budget.max_bytes:,} "
                                 f"(AION_MAX_CUTOUT_BYTES)")


def hdf5_index(path: Path, budget: CutoutBudget | None = None,
               ) -> tuple[list[str], list[float | None], list[float | None], list[str] | None, tuple]:
    """object ids, ra, dec, band names and the image array shape, without reading any image; rows over the
    budget refuse the whole file (they all share one shape)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            for required in ("object_id", "image_array"):
                if required not in handle:
                    raise CutoutRejected(f"HDF5 file {path.name} has no {required!r} dataset")
            check_hdf5_rows(path, handle["image_array"], _budget(budget))
            ids = [_decode_text(v) for v in handle["object_id"][()]]
            shape = tuple(handle["image_array"].shape)

            def coordinate(name: str) -> list[float | None]:
                if name not in handle:
                    return [None] * len(ids)
                values = np.asarray(handle[name][()], dtype=np.float64)
                return [float(v) if np.isfinite(v) else None for v in values]

            return ids, coordinate("ra"), coordinate("dec"), hdf5_bands(handle), shape
    except CutoutRejected:
        raise
    except Exception as error:
        raise CutoutRejected(f"HDF5 file {path.name} does not open: {type(error).__name__}: {error}") from error


def iter_hdf5(path: Path, indices: Sequence[int] | None = None) -> Iterator[Hdf5Row]:
    """Rows of a Multimodal-Universe-style file (``object_id``, ``ra``, ``dec``, ``image_array`` [N, C, H, W])."""
    import h5py

    ids, ras, decs, _, shape = hdf5_index(path)
    wanted = range(shape[0]) if indices is None else indices
    with h5py.File(path, "r") as handle:
        images = handle["image_array"]
        for index in wanted:
            yield Hdf5Row(int(index), ids[index], ras[index], decs[index], np.asarray(images[index], dtype=np.float32))


def decode_flux_array(flux: np.ndarray, bands: Sequence[str] | None, expected: Sequence[str] | None,
                      budget: CutoutBudget | None = None) -> DecodedCutout:
    """Canonical arrays from an in-memory flux cube (one HDF5 row); the budget also bounds what is resampled."""
    _budget(budget).check_decoded(f"{'x'.join(map(str, flux.shape))} {flux.dtype}", int(flux.size),
                                  int(flux.size) * max(flux.dtype.itemsize, 4))
    return _from_flux(np.asarray(flux, dtype=np.float32), list(bands or []), expected)
