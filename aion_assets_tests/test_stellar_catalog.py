"""The stellar catalogue against the real, dirty tables (facts from shared/data/README.md) and small synthetic
copies of them: defects are quarantined with reasons, nothing is silently dropped, splits and scaling hold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aion_assets.stellar.catalog import (
    ERROR_REASON_PREFIX,
    LABELS,
    NAMES,
    SOURCES,
    SPLITS,
    StellarCatalog,
    assign_splits,
    build_catalog,
    fit_standardisation,
    read_sources,
)

DR12, DR10, SEGUE = "apogee_dr12_labels.csv", "apogee_dr10_reference_labels.csv", "segue_colors_feh.csv"
TWO_MASS = r"(2M\d{8}[+-]\d{7})"
COLOURS = ("u_g", "g_r", "r_i", "i_z", "j_h", "j_k")


@pytest.fixture(scope="module")
def stellar_dir(shared_data: Path) -> Path:
    return shared_data / "stellar"


@pytest.fixture(scope="module")
def catalog(stellar_dir: Path) -> StellarCatalog:
    return build_catalog(stellar_dir, seed=0)


@pytest.fixture(scope="module")
def raw_dr10(stellar_dir: Path) -> pl.DataFrame:
    return pl.read_csv(stellar_dir / DR10).with_columns(star_id=pl.col("ID").str.extract(TWO_MASS))


def _of(frame: pl.DataFrame, source: str, star_ids: pl.Series | list[str] | None = None,
        names: tuple[str, ...] | None = None) -> pl.DataFrame:
    frame = frame.filter(pl.col("source") == source)
    if star_ids is not None:
        frame = frame.filter(pl.col("star_id").is_in(list(star_ids)))
    if names is not None:
        frame = frame.filter(pl.col("name").is_in(list(names)))
    return frame


def _value_quarantine(quarantine: pl.DataFrame) -> pl.DataFrame:
    return quarantine.filter(~pl.col("reason").str.starts_with(ERROR_REASON_PREFIX))


# -- the DR10 shift ----------------------------------------------------------------------------------------------------


def test_shifted_dr10_rows_are_realigned_and_the_rest_quarantined(catalog: StellarCatalog,
                                                                  raw_dr10: pl.DataFrame) -> None:
    shifted = raw_dr10.filter(pl.col("Jmag") > 25)  # the README: their Jmag holds the S/N
    assert shifted.height == 69
    measured = _of(catalog.measurements, "apogee_dr10", shifted["star_id"])

    # no S/N-sized number survives anywhere for these stars, and every colour they keep is a plausible one
    assert measured.filter(pl.col("name") != "teff")["value"].abs().max() < 25
    colours = measured.filter(pl.col("name").is_in(COLOURS))
    assert colours.height > 0
    assert colours["value"].abs().max() < 2

    # J now comes from Hmag, H from Kmag, K from e_Teff_corr: the realigned colours equal those differences
    with_j = shifted.filter(pl.col("Hmag") > 0)
    assert with_j.height > 0
    expected = with_j.select("star_id", j_h=pl.col("Hmag") - pl.col("Kmag"),
                             j_k=pl.col("Hmag") - pl.col("e_Teff_corr"))
    got = colours.pivot(on="name", index="star_id", values="value")
    joined = expected.join(got, on="star_id", suffix="_got")
    assert joined.height == with_j.height
    np.testing.assert_allclose(joined["j_h_got"], joined["j_h"], atol=1e-9)
    np.testing.assert_allclose(joined["j_k_got"], joined["j_k"], atol=1e-9)

    # a shifted row without J (0) cannot form J-H or J-K: quarantined with the reason, not measured
    no_j = shifted.filter(pl.col("Hmag") == 0)
    assert no_j.height > 0
    lost = _of(catalog.quarantine, "apogee_dr10", no_j["star_id"], ("j_h", "j_k"))
    assert lost.height == 2 * no_j.height
    assert lost["reason"].str.contains("J = 0").all()
    assert lost["reason"].str.contains("shifted").all()
    assert _of(catalog.measurements, "apogee_dr10", no_j["star_id"], ("j_h", "j_k")).height == 0

    # the errors are lost: teff and m_h stay, with a null error, and the loss is in the quarantine
    labelled = measured.filter(pl.col("name").is_in(["teff", "m_h"]))
    assert labelled.height == 2 * shifted.height
    assert labelled["error"].null_count() == labelled.height
    error_rows = _of(catalog.quarantine, "apogee_dr10", shifted["star_id"]).filter(
        pl.col("reason").str.starts_with(ERROR_REASON_PREFIX))
    assert sorted(error_rows.select("star_id", "name").rows()) == sorted(labelled.select("star_id", "name").rows())

    # the labels before S/N are not shifted and stay as they are
    teff = measured.filter(pl.col("name") == "teff").join(shifted.select("star_id", "Teff_{corr}"), on="star_id")
    np.testing.assert_allclose(teff["value"], teff["Teff_{corr}"])


def test_unshifted_dr10_rows_keep_their_magnitudes_and_errors(catalog: StellarCatalog,
                                                              raw_dr10: pl.DataFrame) -> None:
    normal = raw_dr10.filter(pl.col("Jmag") < 25)
    assert normal.height == raw_dr10.height - 69
    measured = _of(catalog.measurements, "apogee_dr10", normal["star_id"])
    j_h = measured.filter(pl.col("name") == "j_h").join(normal, on="star_id")
    assert j_h.height == normal.height
    np.testing.assert_allclose(j_h["value"], j_h["Jmag"] - j_h["Hmag"], atol=1e-9)
    assert j_h["error"].null_count() == j_h.height  # a derived colour carries no error
    teff = measured.filter(pl.col("name") == "teff").join(normal, on="star_id")
    np.testing.assert_allclose(teff["error"], teff["e_Teff_corr"])
    m_h = measured.filter(pl.col("name") == "m_h").join(normal, on="star_id")
    np.testing.assert_allclose(m_h["value"], m_h["[M/H]_{corr}"])
    np.testing.assert_allclose(m_h["error"], m_h["e_[MH]+corr"])


# -- the SEGUE sentinels -----------------------------------------------------------------------------------------------


def test_segue_sentinel_and_wild_colours_are_quarantined_per_value(catalog: StellarCatalog,
                                                                   stellar_dir: Path) -> None:
    raw = pl.read_csv(stellar_dir / SEGUE).with_row_index("row")
    sentinel_row = raw.filter(pl.col("ri") > 10000)
    assert sentinel_row.height == 1
    star = f"segue-{sentinel_row['row'][0]:06d}"

    quarantined = _of(catalog.quarantine, "segue", [star])
    values = dict(quarantined.select("name", "value").rows())
    assert set(values) == {"r_i", "i_z"}
    assert values["r_i"] == pytest.approx(10013.2, abs=0.05)
    assert values["i_z"] == pytest.approx(-10013.3, abs=0.05)
    assert quarantined["reason"].str.contains("plausible range").all()

    # the star keeps every other value, unchanged
    kept = dict(_of(catalog.measurements, "segue", [star]).select("name", "value").rows())
    assert kept == pytest.approx({"u_g": sentinel_row["ug"][0], "g_r": sentinel_row["gr"][0],
                                  "fe_h": sentinel_row["feh"][0]})

    colours = _of(catalog.measurements, "segue", names=COLOURS)
    assert colours["value"].abs().max() <= 5
    wild = raw.select(pl.col("ug", "gr", "ri", "iz").abs().gt(5).sum()).sum_horizontal()[0]
    segue_q = _of(catalog.quarantine, "segue")
    assert segue_q.height == wild
    wild_rows = raw.filter(pl.any_horizontal(pl.col("ug", "gr", "ri", "iz").abs() > 5)).height
    assert 8 <= wild_rows <= 12  # "about 10 rows have |colour| > 5"

    # per value, not per row: every star with a quarantined colour still has all its other values
    for star_id, group in segue_q.group_by("star_id"):
        names = set(_of(catalog.measurements, "segue", [star_id[0]])["name"])
        assert names == {"u_g", "g_r", "r_i", "i_z", "fe_h"} - set(group["name"])


# -- nothing dropped ---------------------------------------------------------------------------------------------------


def test_every_ingested_cell_is_a_measurement_or_quarantined(catalog: StellarCatalog, stellar_dir: Path) -> None:
    rows = {"apogee_dr12": pl.read_csv(stellar_dir / DR12).height, "apogee_dr10": pl.read_csv(stellar_dir / DR10).height,
            "segue": pl.read_csv(stellar_dir / SEGUE).height}
    assert rows == {"apogee_dr12": 9618, "apogee_dr10": 548, "segue": 27911}
    names_per_source = {"apogee_dr12": 19, "apogee_dr10": 8, "segue": 5}
    keys = ["star_id", "source", "name"]
    union = pl.concat([catalog.measurements.select(keys), _value_quarantine(catalog.quarantine).select(keys)])
    assert union.height == union.unique().height  # each cell lands exactly once
    counts = dict(union.group_by("source").len().rows())
    assert counts == {source: rows[source] * names_per_source[source] for source in SOURCES}
    assert catalog.quarantine["reason"].null_count() == 0
    assert (catalog.quarantine["reason"].str.len_chars() > 20).all()

    # an error-only quarantine row points at a value that is still measured, without its error
    errors = catalog.quarantine.filter(pl.col("reason").str.starts_with(ERROR_REASON_PREFIX))
    assert errors.height > 0
    still = errors.select(keys).join(catalog.measurements, on=keys, how="left")
    assert still["value"].null_count() == 0
    assert still["error"].null_count() == still.height


# -- synthetic edge cases ----------------------------------------------------------------------------------------------


def _copy_heads(stellar_dir: Path, target: Path, n: int = 6) -> dict[str, pl.DataFrame]:
    """The first rows of each real table as text (real headers), written into ``target`` and returned."""
    target.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name in (DR12, DR10, SEGUE):
        tables[name] = pl.read_csv(stellar_dir / name, infer_schema_length=0, n_rows=n)
        tables[name].write_csv(target / name)
    return tables


def _set(frame: pl.DataFrame, row: int, **cells: str) -> pl.DataFrame:
    index = pl.int_range(pl.len()) == row
    return frame.with_columns(pl.when(index).then(pl.lit(v)).otherwise(pl.col(k)).alias(k) for k, v in cells.items())


def test_nan_out_of_range_sentinel_and_missing_values_are_quarantined(stellar_dir: Path, tmp_path: Path) -> None:
    tables = _copy_heads(stellar_dir, tmp_path)
    dr12 = _set(tables[DR12], 0, FE_H="NaN")
    dr12 = _set(dr12, 1, TEFF="50000")
    dr12 = _set(dr12, 2, TEFF="9999", LOGG="", MG_H="not-a-number")
    dr12.write_csv(tmp_path / DR12)
    ids = dr12["APOGEE_ID"].to_list()

    measurements, quarantine = read_sources(tmp_path)
    reasons = {(star, name): reason for star, _, name, _, reason in _of(quarantine, "apogee_dr12").rows()}
    assert set(reasons) == {(ids[0], "fe_h"), (ids[1], "teff"), (ids[2], "teff"), (ids[2], "logg"), (ids[2], "mg_h")}
    assert "not a finite number" in reasons[(ids[0], "fe_h")]
    assert "teff = 50000" in reasons[(ids[1], "teff")] and "[2500, 10000]" in reasons[(ids[1], "teff")]
    assert "sentinel" in reasons[(ids[2], "teff")]
    assert "missing" in reasons[(ids[2], "logg")]
    assert "not-a-number" in reasons[(ids[2], "mg_h")]
    # the stars keep their other values
    per_star = dict(_of(measurements, "apogee_dr12").group_by("star_id").len().rows())
    assert per_star == {ids[0]: 18, ids[1]: 18, ids[2]: 16, **{star: 19 for star in ids[3:]}}


def test_shift_rule_generalises_beyond_the_published_rows(stellar_dir: Path, tmp_path: Path) -> None:
    tables = _copy_heads(stellar_dir, tmp_path)
    dr10 = tables[DR10]
    original = dr10.row(0, named=True)
    # shift a giant (not a Pleiades dwarf) one column from S/N on, as the published defect does
    dr10 = _set(dr10, 0, **{"S/N": "-0.05", "Jmag": original["S/N"], "Hmag": original["Jmag"],
                            "Kmag": original["Hmag"], "e_Teff_corr": original["Kmag"], "e_[MH]+corr": "0.0"})
    # an ordinary row that merely lacks J: not a shift, so nothing moves, and its J colours cannot be formed
    dr10 = _set(dr10, 1, Jmag="0.000")
    dr10.write_csv(tmp_path / DR10)
    shifted_id, no_j_id = (dr10["ID"].str.extract(TWO_MASS)[i] for i in (0, 1))

    measurements, quarantine = read_sources(tmp_path)
    shifted = dict(_of(measurements, "apogee_dr10", [shifted_id]).select("name", "value").rows())
    assert shifted["j_h"] == pytest.approx(float(original["Jmag"]) - float(original["Hmag"]))
    assert shifted["j_k"] == pytest.approx(float(original["Jmag"]) - float(original["Kmag"]))
    shifted_q = _of(quarantine, "apogee_dr10", [shifted_id])
    assert set(shifted_q["name"]) == {"teff", "m_h"}
    assert shifted_q["reason"].str.starts_with(ERROR_REASON_PREFIX).all()

    no_j = _of(measurements, "apogee_dr10", [no_j_id])
    assert "j_h" not in set(no_j["name"]) and "j_k" not in set(no_j["name"])
    assert no_j.filter(pl.col("name") == "teff")["error"][0] == pytest.approx(float(dr10["e_Teff_corr"][1]))
    no_j_q = _of(quarantine, "apogee_dr10", [no_j_id])
    assert set(no_j_q["name"]) == {"j_h", "j_k"}
    assert no_j_q["reason"].str.contains("J = 0").all()
    assert not no_j_q["reason"].str.contains("shifted").any()


def test_missing_column_or_file_is_a_clear_error(stellar_dir: Path, tmp_path: Path) -> None:
    tables = _copy_heads(stellar_dir, tmp_path)
    tables[DR12].drop("LOGG").write_csv(tmp_path / DR12)
    with pytest.raises(ValueError, match=r"apogee_dr12_labels\.csv.*LOGG"):
        read_sources(tmp_path)

    tables[DR12].write_csv(tmp_path / DR12)
    tables[DR10].drop("Kmag").write_csv(tmp_path / DR10)
    with pytest.raises(ValueError, match=r"apogee_dr10_reference_labels\.csv.*Kmag"):
        read_sources(tmp_path)

    shutil.copyfile(stellar_dir / DR10, tmp_path / DR10)
    (tmp_path / SEGUE).unlink()
    with pytest.raises(FileNotFoundError, match=r"segue_colors_feh\.csv"):
        build_catalog(tmp_path)


# -- vocabulary --------------------------------------------------------------------------------------------------------


def test_names_are_one_vocabulary_across_sources(catalog: StellarCatalog) -> None:
    assert len(NAMES) == len(set(NAMES)) == 27
    assert set(LABELS) == set(NAMES)
    assert LABELS["teff"] == "Teff [K]" and LABELS["fe_h"] == "[Fe/H]" and LABELS["u_g"] == "u-g"
    by_source = {source: set(group["name"]) for (source,), group in catalog.measurements.group_by("source")}
    assert set(by_source) == set(SOURCES)
    assert set().union(*by_source.values()) <= set(NAMES)
    assert {"teff", "logg", "m_h", "alpha_m"} <= by_source["apogee_dr12"] & by_source["apogee_dr10"]
    assert "fe_h" in by_source["apogee_dr12"] & by_source["segue"]
    assert by_source["segue"] == {"u_g", "g_r", "r_i", "i_z", "fe_h"}
    assert by_source["apogee_dr10"] == {"teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "j_h", "j_k"}
    assert not {"rvel", "s_n", "snr"} & set().union(*by_source.values())
    # the APOGEE star id is the 2MASS designation; DR12's AP ids are kept as they are
    apogee = catalog.measurements.filter(pl.col("source") != "segue")["star_id"]
    assert apogee.str.contains(r"^(2M|AP)\d{8}[+-]\d{7}$").all()


# -- splits ------------------------------------------------------------------------------------------------------------


def test_splits_are_seeded_stable_and_per_star(catalog: StellarCatalog) -> None:
    stars = catalog.measurements["star_id"].unique().sort()
    first, again, other = assign_splits(stars, 0), assign_splits(stars, 0), assign_splits(stars, 1)
    assert first.to_list() == again.to_list()
    assert (first != other).mean() > 0.3  # two independent draws agree on 0.7^2 + 0.1^2 + 0.2^2 = 54% of stars
    shares = first.value_counts(normalize=True)
    share = dict(zip(shares["split"], shares["proportion"]))
    for split, target in zip(SPLITS, (0.7, 0.1, 0.2)):
        assert share[split] == pytest.approx(target, abs=0.02)
    custom = assign_splits(stars, 0, fractions=(0.5, 0.5, 0.0))
    assert set(custom) == {"train", "validation"}

    # a star in two sources is one star: one split
    per_star = catalog.measurements.group_by("star_id").agg(pl.col("split").n_unique(), pl.col("source").n_unique())
    assert (per_star["split"] == 1).all()
    assert (per_star["source"] == 2).sum() > 0  # stars observed by both DR10 and DR12 exist

    # adding stars (and reordering) moves no existing star
    subset = stars.head(3000)
    before = dict(zip(subset, assign_splits(subset, 0)))
    grown = pl.concat([pl.Series(["2M99999999+0000000", "new-star"]), stars.head(5000)]).shuffle(seed=3)
    after = dict(zip(grown, assign_splits(grown, 0)))
    assert all(after[star] == split for star, split in before.items())

    with pytest.raises(ValueError, match="fractions"):
        assign_splits(stars, 0, fractions=(0.7, 0.2, 0.2))


# -- standardisation ---------------------------------------------------------------------------------------------------


def test_standardisation_uses_the_train_split_only(catalog: StellarCatalog) -> None:
    m = catalog.measurements
    train_teff = m.filter((pl.col("split") == "train") & (pl.col("name") == "teff"))["value"].to_numpy()
    row = catalog.standardisation.filter(pl.col("name") == "teff").row(0, named=True)
    assert row["median"] == pytest.approx(np.median(train_teff))
    assert row["mad"] == pytest.approx(1.4826 * np.median(np.abs(train_teff - np.median(train_teff))))
    assert row["n"] == train_teff.size
    assert catalog.standardisation["name"].to_list() == list(NAMES)

    fitted = fit_standardisation(m)
    assert fitted.equals(catalog.standardisation)
    skewed_test = m.with_columns(value=pl.when(pl.col("split") == "test").then(pl.col("value") * 100 + 7)
                                 .otherwise(pl.col("value")))
    assert fit_standardisation(skewed_test).equals(fitted)
    skewed_train = m.with_columns(value=pl.when(pl.col("split") == "train").then(pl.col("value") * 100 + 7)
                                  .otherwise(pl.col("value")))
    assert not fit_standardisation(skewed_train).equals(fitted)


def test_zero_mad_falls_back_to_std_then_one() -> None:
    m = pl.DataFrame({"name": ["teff"] * 5 + ["logg"] * 3 + ["m_h"],
                      "value": [5000.0, 5000, 5000, 5000, 6000, 2.0, 2.0, 2.0, 0.1],
                      "split": ["train"] * 8 + ["test"]})
    fitted = {name: (median, mad, n) for name, median, mad, n in fit_standardisation(m).rows()}
    assert fitted["teff"] == pytest.approx((5000.0, np.std([5000, 5000, 5000, 5000, 6000], ddof=1), 5))
    assert fitted["logg"] == (2.0, 1.0, 3)
    assert fitted["m_h"] == (0.0, 1.0, 0)  # only a test value: nothing to fit, identity scaling


def test_standardise_round_trips(catalog: StellarCatalog) -> None:
    for name in NAMES:
        x = np.linspace(-3.0, 3.0, 7) * 100
        z = catalog.standardise(name, x)
        assert isinstance(z, np.ndarray)
        np.testing.assert_allclose(catalog.unstandardise(name, z), x, rtol=1e-12, atol=1e-9)
    scalar = catalog.standardise("teff", 5000.0)
    assert isinstance(scalar, float)
    assert catalog.unstandardise("teff", scalar) == pytest.approx(5000.0)
    teff = catalog.measurements.filter(pl.col("name") == "teff")
    np.testing.assert_allclose(teff["z"], catalog.standardise("teff", teff["value"].to_numpy()))
    assert abs(float(np.median(teff.filter(pl.col("split") == "train")["z"]))) < 1e-9
    with pytest.raises(KeyError, match="vocabulary"):
        catalog.standardise("rvel", 1.0)
