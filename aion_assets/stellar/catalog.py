"""The stellar label emulator's training catalogue: three dirty public tables cleaned into one long table.

Why this exists: the emulator (Leung, Bovy & Speagle 2024) learns from (name, value) tokens, so every catalogue
must speak one vocabulary in which one name means one quantity everywhere (``teff`` is APOGEE DR12 TEFF and DR10's
calibrated Teff_{corr}; ``fe_h`` is DR12 FE_H and SEGUE feh). The tables are kept exactly as published, defects
included, so they are read defensively:

- every value is screened on its own, so a star keeps its good values: a value that is missing, not finite, a
  sentinel (+-9999) or outside the plausible physical range of its kind (:data:`PLAUSIBLE`) becomes a row of the
  quarantine table with a reason in words, never silently dropped and never silently kept;
- APOGEE DR10 rows shifted one column from S/N on (69 Pleiades dwarfs in the published file) are found by a rule,
  not a list: their Jmag holds an S/N (>= 25, too bright a number for any 2MASS magnitude) while Kmag is still a
  plausible magnitude. J, H and K are realigned from Hmag, Kmag and e_Teff_corr; the lost errors, and any colour
  that needs a magnitude the row does not have (0), go to the quarantine;
- a quarantine row whose reason starts with :data:`ERROR_REASON_PREFIX` concerns only an uncertainty: the value
  stays in the measurements with a null error. Every other quarantine row is a value that is not a measurement, so
  measurements plus value quarantine account for every ingested cell.

Splits are drawn per star from a stable hash of (seed, star_id), so a star observed by two surveys lands in one
split and adding stars never moves existing ones. The standardisation (median and scaled MAD per name) is fitted on
the train split only, so validation and test values never leak into the model's input scaling.

Nothing here imports dagster: the stellar assets wrap these functions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

SOURCES: tuple[str, ...] = ("apogee_dr12", "apogee_dr10", "segue")
SPLITS: tuple[str, ...] = ("train", "validation", "test")

ABUNDANCES: tuple[str, ...] = ("al_h", "ca_h", "c_h", "fe_h", "k_h", "mg_h", "mn_h", "na_h", "ni_h", "n_h", "o_h",
                               "si_h", "s_h", "ti_h", "v_h")
COLOURS: tuple[str, ...] = ("u_g", "g_r", "r_i", "i_z", "j_h", "j_k")
NAMES: tuple[str, ...] = ("teff", "logg", "m_h", "alpha_m", "c_m", "n_m", *ABUNDANCES, *COLOURS)

LABELS: dict[str, str] = {
    "teff": "Teff [K]", "logg": "log g [dex]", "m_h": "[M/H]", "alpha_m": "[α/M]", "c_m": "[C/M]", "n_m": "[N/M]",
    **{name: f"[{name.split('_')[0].capitalize()}/H]" for name in ABUNDANCES},
    "u_g": "u-g", "g_r": "g-r", "r_i": "r-i", "i_z": "i-z", "j_h": "J-H", "j_k": "J-K",
}

ERROR_REASON_PREFIX = "error of "
SCALED_MAD = 1.4826  # MAD x 1.4826 estimates the standard deviation of a normal distribution


@dataclass(frozen=True)
class PlausibleRange:
    """Inclusive bounds a value of one kind must lie within, and how the kind reads in a reason."""

    low: float
    high: float
    what: str

    def text(self) -> str:
        return f"[{self.low:g}, {self.high:g}] for {self.what}"


# Generous physical bounds: they catch sentinels, leaked magnitudes and unit slips, never a real but unusual star.
# - teff: the coolest M dwarfs and L-type boundary sit near 2500 K; APOGEE/SEGUE pipelines do not fit above 10000 K.
# - logg: supergiants reach about -1 dex, white dwarfs sit above 7 but none is in these spectroscopic samples: 6 keeps
#   every main-sequence dwarf.
# - [X/H] and [M/H]: the most metal-poor stars known sit near -6 to -7; nothing in the Galaxy is 100x solar (+2).
# - [X/M] ratios: alpha ratios lie within +-1; carbon-enhanced metal-poor stars reach [C/Fe] of about +4.
# - colours: a real optical or near-infrared colour stays within +-5 mag; more means a failed or sentinel magnitude.
PLAUSIBLE: dict[str, PlausibleRange] = {
    "temperature": PlausibleRange(2500.0, 10000.0, "an effective temperature in K"),
    "gravity": PlausibleRange(-1.5, 6.0, "a surface gravity log g in dex"),
    "abundance": PlausibleRange(-6.0, 2.0, "an abundance or metallicity [X/H] in dex"),
    "ratio": PlausibleRange(-3.0, 4.0, "an abundance ratio [X/M] in dex"),
    "colour": PlausibleRange(-5.0, 5.0, "a colour in mag"),
}
KIND: dict[str, str] = {
    "teff": "temperature", "logg": "gravity", "m_h": "abundance", "alpha_m": "ratio", "c_m": "ratio", "n_m": "ratio",
    **{name: "abundance" for name in ABUNDANCES}, **{name: "colour" for name in COLOURS},
}
# Exact missing-value markers that a range alone would let through (a teff of 9999 K is inside [2500, 10000]).
SENTINELS: tuple[float, ...] = (-9999.0, 9999.0)
# 2MASS J, H, K magnitudes of real sources lie strictly between 0 and 25; the DR10 table writes 0 for a missing one.
MAGNITUDE_RANGE: tuple[float, float] = (0.0, 25.0)

DR12_FILE = "apogee_dr12_labels.csv"
DR10_FILE = "apogee_dr10_reference_labels.csv"
SEGUE_FILE = "segue_colors_feh.csv"

DR12_VALUES: dict[str, str] = {"teff": "TEFF", "logg": "LOGG", "m_h": "PARAM_M_H", "alpha_m": "PARAM_ALPHA_M",
                               **{name: name.upper() for name in ABUNDANCES}}
# DR10: the calibrated (corrected) labels, the ones the reference set was meant to be used with.
DR10_VALUES: dict[str, str] = {"teff": "Teff_{corr}", "logg": "logg_{corr}", "m_h": "[M/H]_{corr}", "c_m": "[C/M]",
                               "n_m": "[N/M]", "alpha_m": "[a/M]"}
DR10_ERRORS: dict[str, str] = {"teff": "e_Teff_corr", "m_h": "e_[MH]+corr"}
DR10_MAGNITUDES: tuple[str, ...] = ("Jmag", "Hmag", "Kmag")
SEGUE_VALUES: dict[str, str] = {"u_g": "ug", "g_r": "gr", "r_i": "ri", "i_z": "iz", "fe_h": "feh"}
# The 2MASS designation inside a file name; APOGEE's own AP ids (stars without a 2MASS match) are kept as they are.
STAR_ID_PATTERN = r"((?:2M|AP)\d{8}[+-]\d{7})"
SHIFT_NOTE = "the row is shifted one column from S/N on"

MEASUREMENT_SCHEMA: dict[str, pl.DataType] = {"star_id": pl.String(), "source": pl.String(), "name": pl.String(),
                                               "value": pl.Float64(), "error": pl.Float64()}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {"star_id": pl.String(), "source": pl.String(), "name": pl.String(),
                                              "value": pl.Float64(), "reason": pl.String()}


@dataclass(frozen=True)
class Standardisation:
    """Per-name median and (scaled) MAD: z = (value - median) / mad. A model's inputs and outputs are in these
    units, so a trained version keeps its own copy of them."""

    scales: dict[str, tuple[float, float]]

    @classmethod
    def from_table(cls, table: pl.DataFrame) -> Standardisation:
        rows = table.select("name", "median", "mad").iter_rows()
        return cls({name: (float(median), float(mad)) for name, median, mad in rows})

    def _scale(self, name: str) -> tuple[float, float]:
        if name not in self.scales:
            raise KeyError(f"no standardisation for {name!r}; the vocabulary is {', '.join(self.scales)}")
        return self.scales[name]

    def standardise(self, name: str, value: np.ndarray | float) -> np.ndarray | float:
        """(value - median) / mad of ``name``; a float for a scalar, an array otherwise."""
        median, mad = self._scale(name)
        return _elementwise(value, lambda x: (x - median) / mad)

    def unstandardise(self, name: str, z: np.ndarray | float) -> np.ndarray | float:
        """The inverse of :meth:`standardise`: z * mad + median."""
        median, mad = self._scale(name)
        return _elementwise(z, lambda x: x * mad + median)


@dataclass(frozen=True)
class StellarCatalog:
    """Measurements (one row per star, source and name, with its split and standardised value ``z``), the train-only
    standardisation per name, and the quarantined values with their reasons."""

    measurements: pl.DataFrame
    standardisation: pl.DataFrame
    quarantine: pl.DataFrame

    @cached_property
    def scales(self) -> Standardisation:
        return Standardisation.from_table(self.standardisation)

    def standardise(self, name: str, value: np.ndarray | float) -> np.ndarray | float:
        return self.scales.standardise(name, value)

    def unstandardise(self, name: str, z: np.ndarray | float) -> np.ndarray | float:
        return self.scales.unstandardise(name, z)


def _elementwise(value: np.ndarray | float, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | float:
    array = np.asarray(value, dtype=np.float64)
    result = function(array)
    return float(result) if array.ndim == 0 else result


# -- reading ----------------------------------------------------------------------------------------------------------


def _read_table(path: Path, required: list[str]) -> pl.DataFrame:
    """All columns as text, so one stray token cannot abort the read or turn a numeric column into strings."""
    if not path.is_file():
        raise FileNotFoundError(f"stellar table {path.name} not found at {path}")
    try:
        frame = pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.PolarsError as error:
        raise ValueError(f"{path.name}: cannot be read as CSV ({path}): {error}") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)} (file {path})")
    return frame.with_row_index("_row")


def _number(column: str) -> pl.Expr:
    """The cell as a float; text that is not a number becomes null and is quarantined as such later."""
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def _star_ids(frame: pl.DataFrame, source: str, found: pl.Expr) -> pl.DataFrame:
    """``star_id`` from ``found``, or a row-number placeholder (and a note) where a row names no star."""
    placeholder = pl.format(f"{source}-row-{{}}", pl.col("_row").cast(pl.String).str.zfill(6))
    return frame.with_columns(star_id=found).with_columns(
        _id_note=pl.when(pl.col("star_id").is_null() | (pl.col("star_id") == ""))
        .then(pl.lit("the row names no star (no usable id)")),
        star_id=pl.when(pl.col("star_id").is_null() | (pl.col("star_id") == "")).then(placeholder)
        .otherwise(pl.col("star_id")))


def _cell(frame: pl.DataFrame, source: str, name: str, value: pl.Expr, raw: pl.Expr | None = None,
          error: pl.Expr | None = None, note: pl.Expr | None = None, error_note: pl.Expr | None = None,
          ) -> pl.DataFrame:
    """One name of every row as long rows; ``note``/``error_note`` carry a reason already known while reading."""
    none_text = pl.lit(None, pl.String)
    return frame.select(
        "star_id", "_row", source=pl.lit(source), name=pl.lit(name),
        raw=raw if raw is not None else none_text,
        value=value.cast(pl.Float64), error=(error if error is not None else pl.lit(None)).cast(pl.Float64),
        note=pl.coalesce(pl.col("_id_note"), note if note is not None else none_text),
        error_note=error_note if error_note is not None else none_text)


def _read_dr12(stellar_dir: Path) -> list[pl.DataFrame]:
    frame = _read_table(stellar_dir / DR12_FILE, ["APOGEE_ID", *DR12_VALUES.values()])
    frame = _star_ids(frame, "apogee_dr12", pl.col("APOGEE_ID").str.strip_chars())
    return [_cell(frame, "apogee_dr12", name, _number(column), raw=pl.col(column))
            for name, column in DR12_VALUES.items()]


def _plausible_magnitude(magnitude: pl.Expr) -> pl.Expr:
    low, high = MAGNITUDE_RANGE
    return magnitude.is_not_null() & magnitude.is_finite() & (magnitude > low) & (magnitude < high)


def _colour(frame: pl.DataFrame, name: str, first: str, second: str) -> pl.DataFrame:
    """first - second; a colour that needs an implausible (missing, 0) magnitude cannot be formed and is quarantined
    with a null value (there is no colour to show), its reason naming the magnitude."""
    def why(band: str) -> pl.Expr:
        shown = pl.col(band).round_sig_figs(6).cast(pl.String).fill_null("missing")
        context = (pl.when(pl.col("_shifted")).then(pl.lit(f"; {SHIFT_NOTE}, its J, H, K were realigned"))
                   .otherwise(pl.lit("")))
        return pl.concat_str([pl.lit(f"{name} cannot be formed: {band} = "), shown,
                              pl.lit(" is not a plausible 2MASS magnitude (0 < mag < 25; 0 marks a missing one)"),
                              context])

    formable = _plausible_magnitude(pl.col(first)) & _plausible_magnitude(pl.col(second))
    note = (pl.when(~_plausible_magnitude(pl.col(first))).then(why(first))
            .when(~_plausible_magnitude(pl.col(second))).then(why(second)))
    return _cell(frame, "apogee_dr10", name, pl.when(formable).then(pl.col(first) - pl.col(second)), note=note)


def _read_dr10(stellar_dir: Path) -> list[pl.DataFrame]:
    frame = _read_table(stellar_dir / DR10_FILE,
                        ["ID", *DR10_VALUES.values(), *DR10_MAGNITUDES, *DR10_ERRORS.values()])
    frame = _star_ids(frame, "apogee_dr10", pl.col("ID").str.extract(STAR_ID_PATTERN))
    jmag, hmag, kmag, e_teff = _number("Jmag"), _number("Hmag"), _number("Kmag"), _number("e_Teff_corr")
    # A shifted row's Jmag holds its S/N: a number too large for any magnitude, while Kmag (holding H) still reads
    # as one. Requiring the large Jmag keeps an ordinary row with a missing J (0) from being "realigned".
    shifted = (jmag.is_finite() & (jmag >= MAGNITUDE_RANGE[1]) & _plausible_magnitude(kmag)).fill_null(False)
    frame = frame.with_columns(_shifted=shifted).with_columns(
        J=pl.when(pl.col("_shifted")).then(hmag).otherwise(jmag),
        H=pl.when(pl.col("_shifted")).then(kmag).otherwise(hmag),
        K=pl.when(pl.col("_shifted")).then(e_teff).otherwise(kmag))

    cells = []
    for name, column in DR10_VALUES.items():
        error, error_note = None, None
        if name in DR10_ERRORS:
            error_column = DR10_ERRORS[name]
            error = pl.when(pl.col("_shifted")).then(None).otherwise(_number(error_column))
            error_note = (
                pl.when(pl.col("_shifted"))
                .then(pl.lit(f"{ERROR_REASON_PREFIX}{name} lost: {SHIFT_NOTE}, so {error_column} no longer holds "
                             f"it; {name} kept without an error"))
                .when(_number(error_column).is_null())
                .then(pl.lit(f"{ERROR_REASON_PREFIX}{name} is missing or not a number in {error_column}; "
                             f"{name} kept without an error")))
        cells.append(_cell(frame, "apogee_dr10", name, _number(column), raw=pl.col(column), error=error,
                           error_note=error_note))
    return [*cells, _colour(frame, "j_h", "J", "H"), _colour(frame, "j_k", "J", "K")]


def _read_segue(stellar_dir: Path) -> list[pl.DataFrame]:
    frame = _read_table(stellar_dir / SEGUE_FILE, list(SEGUE_VALUES.values()))
    # The table has no identifier: the row number is the only stable handle on a star.
    frame = _star_ids(frame, "segue", pl.format("segue-{}", pl.col("_row").cast(pl.String).str.zfill(6)))
    return [_cell(frame, "segue", name, _number(column), raw=pl.col(column)) for name, column in SEGUE_VALUES.items()]


# -- screening --------------------------------------------------------------------------------------------------------


def _value_reason() -> pl.Expr:
    """Why a value cannot be a measurement, or null when it can; the first rule that applies wins."""
    shown = pl.col("value").round_sig_figs(6).cast(pl.String)
    sentinel_hint = (pl.when((pl.col("value").abs() >= 1000.0) & (pl.col("_kind") != "temperature"))
                     .then(pl.lit(" (the size of a leaked -9999 sentinel)")).otherwise(pl.lit("")))
    return (
        pl.when(pl.col("note").is_not_null()).then(pl.col("note"))
        .when(pl.col("value").is_null())
        .then(pl.concat_str([pl.col("name"), pl.lit(" is missing or not a number (cell '"),
                             pl.col("raw").fill_null(""), pl.lit("')")]))
        .when(~pl.col("value").is_finite())
        .then(pl.concat_str([pl.col("name"), pl.lit(" = "), shown, pl.lit(" is not a finite number")]))
        .when(pl.col("value").is_in(SENTINELS))
        .then(pl.concat_str([pl.col("name"), pl.lit(" = "), shown, pl.lit(" is a missing-value sentinel")]))
        .when((pl.col("value") < pl.col("_low")) | (pl.col("value") > pl.col("_high")))
        .then(pl.concat_str([pl.col("name"), pl.lit(" = "), shown, pl.lit(" outside the plausible range "),
                             pl.col("_range"), sentinel_hint])))


def _error_reason() -> pl.Expr:
    shown = pl.col("error").round_sig_figs(6).cast(pl.String)
    bad = pl.col("error").is_not_null() & ~(pl.col("error").is_finite() & (pl.col("error") > 0)).fill_null(False)
    return (pl.when(pl.col("error_note").is_not_null()).then(pl.col("error_note"))
            .when(bad).then(pl.concat_str([pl.lit(ERROR_REASON_PREFIX), pl.col("name"), pl.lit(" = "), shown,
                                           pl.lit(" is not a positive finite uncertainty; "), pl.col("name"),
                                           pl.lit(" kept without an error")])))


def _screen(cells: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    ranges = pl.DataFrame({"name": list(NAMES), "_kind": [KIND[name] for name in NAMES],
                           "_low": [PLAUSIBLE[KIND[name]].low for name in NAMES],
                           "_high": [PLAUSIBLE[KIND[name]].high for name in NAMES],
                           "_range": [PLAUSIBLE[KIND[name]].text() for name in NAMES]})
    order = pl.DataFrame({"source": list(SOURCES), "_source_rank": list(range(len(SOURCES)))},
                         schema_overrides={"_source_rank": pl.Int64})
    names = pl.DataFrame({"name": list(NAMES), "_name_rank": list(range(len(NAMES)))},
                         schema_overrides={"_name_rank": pl.Int64})
    cells = (cells.join(ranges, on="name", how="left").join(order, on="source", how="left")
             .join(names, on="name", how="left")
             .sort("_source_rank", "_row", "_name_rank", maintain_order=True)
             .with_columns(reason=_value_reason()))
    kept = cells.filter(pl.col("reason").is_null()).with_columns(error_reason=_error_reason())

    measurements = kept.with_columns(
        error=pl.when(pl.col("error_reason").is_null()).then(pl.col("error")).cast(pl.Float64)
    ).select(*MEASUREMENT_SCHEMA.keys())
    error_rows = kept.filter(pl.col("error_reason").is_not_null()).select(
        "star_id", "source", "name", "_source_rank", "_row", "_name_rank",
        value=pl.when(pl.col("error_note").is_null()).then(pl.col("error")).cast(pl.Float64),
        reason="error_reason", _is_error=pl.lit(True))
    value_rows = cells.filter(pl.col("reason").is_not_null()).select(
        "star_id", "source", "name", "_source_rank", "_row", "_name_rank", "value", "reason",
        _is_error=pl.lit(False))
    quarantine = (pl.concat([value_rows, error_rows])
                  .sort("_source_rank", "_row", "_name_rank", "_is_error")
                  .select(*QUARANTINE_SCHEMA.keys()))
    return measurements.cast(MEASUREMENT_SCHEMA), quarantine.cast(QUARANTINE_SCHEMA)


def read_sources(stellar_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(measurements without split/z, quarantine) from the three CSVs; a missing file or missing column is a clear
    error naming the file."""
    stellar_dir = Path(stellar_dir)
    cells = pl.concat([*_read_dr12(stellar_dir), *_read_dr10(stellar_dir), *_read_segue(stellar_dir)])
    return _screen(cells)


# -- splits and standardisation ---------------------------------------------------------------------------------------


def _unit_hash(seed: int, star_id: str) -> float:
    """A number in [0, 1) fixed by (seed, star_id) alone: blake2b, because Python's and polars' hashes are not
    stable across processes or versions, and a star must keep its split from one run (and release) to the next."""
    digest = hashlib.blake2b(f"{seed}\x1f{star_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_splits(star_ids: pl.Series, seed: int,
                  fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> pl.Series:
    """Seeded split by star: a stable hash of (seed, star_id) so a star keeps its split when stars are added, and the
    same star in two sources lands in one split."""
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers summing to 1 "
                         f"({', '.join(SPLITS)}), got {fractions}")
    if star_ids.null_count():
        raise ValueError(f"{star_ids.null_count()} star ids are null; every star needs an id to be split")
    edges = np.cumsum(fractions)[:-1]
    mapping = {star_id: SPLITS[int(np.searchsorted(edges, _unit_hash(seed, star_id), side="right"))]
               for star_id in star_ids.unique().to_list()}
    return star_ids.replace_strict(mapping, return_dtype=pl.String).alias("split")


def _usable_scale(column: str) -> pl.Expr:
    return pl.col(column).is_not_null() & pl.col(column).is_finite() & (pl.col(column) > 0)


def fit_standardisation(measurements: pl.DataFrame) -> pl.DataFrame:
    """Median, scaled MAD and count per name over the train split only, one row per name of :data:`NAMES`.

    A zero MAD (more than half the train values identical, e.g. a quantised label) would divide by zero: fall back
    to the standard deviation, and to 1.0 when that is zero or undefined too. A name with no train value gets
    median 0 and mad 1 (n = 0 says so), so standardising it is the identity rather than an error.
    """
    stats = (measurements.filter(pl.col("split") == "train").group_by("name")
             .agg(median=pl.col("value").median(),
                  _mad=(pl.col("value") - pl.col("value").median()).abs().median() * SCALED_MAD,
                  _std=pl.col("value").std(), n=pl.len().cast(pl.Int64)))
    return (pl.DataFrame({"name": list(NAMES)}).join(stats, on="name", how="left", maintain_order="left")
            .select("name",
                    median=pl.col("median").fill_null(0.0).cast(pl.Float64),
                    mad=pl.when(_usable_scale("_mad")).then(pl.col("_mad")).when(_usable_scale("_std")).then(pl.col("_std"))
                    .otherwise(1.0).cast(pl.Float64),
                    n=pl.col("n").fill_null(0).cast(pl.Int64)))


def build_catalog(stellar_dir: Path, seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> StellarCatalog:
    """Read, screen, split by star and standardise the three stellar tables in ``stellar_dir``."""
    measurements, quarantine = read_sources(stellar_dir)
    measurements = measurements.with_columns(split=assign_splits(measurements["star_id"], seed, fractions))
    standardisation = fit_standardisation(measurements)
    measurements = (measurements.join(standardisation.select("name", "median", "mad"), on="name", how="left",
                                      maintain_order="left")
                    .with_columns(z=(pl.col("value") - pl.col("median")) / pl.col("mad"))
                    .drop("median", "mad"))
    return StellarCatalog(measurements=measurements, standardisation=standardisation, quarantine=quarantine)
