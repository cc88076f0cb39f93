"""The tasks the emulator is asked, the stars each is asked about, and `--given` parsing. Pure: no model."""

from __future__ import annotations

import math

import polars as pl
import pytest

from aion_assets.stellar.predict import parse_given, text_histogram
from aion_assets.stellar.tasks import ALL_INPUTS, TASK_BY_NAME, TASKS, Task, subsample, task_table


def _rows(*rows: tuple[str, str, str, float, str]) -> pl.DataFrame:
    star_id, source, name, value, split = zip(*rows)
    return pl.DataFrame({"star_id": star_id, "source": source, "name": name, "value": value, "split": split,
                         "z": [v / 10 for v in value]})


def test_variants_leave_each_input_out_once_and_never_ask_for_an_input() -> None:
    for task in TASKS:
        variants = dict(task.variants())
        assert variants[ALL_INPUTS] == task.inputs and task.target not in task.inputs
        assert len(variants) == len(task.inputs) + 1
        for name in task.inputs:
            assert set(variants[f"without_{name}"]) == set(task.inputs) - {name}


def test_a_task_asks_only_stars_of_its_source_and_split_that_have_the_target_and_every_input() -> None:
    task = Task("t", "logg", ("teff", "m_h"), "dr12", "logg from teff and m_h")
    rows = _rows(("a", "dr12", "logg", 2.5, "test"), ("a", "dr12", "teff", 4900.0, "test"),
                 ("a", "dr12", "m_h", -0.2, "test"),
                 ("b", "dr12", "logg", 3.0, "test"), ("b", "dr12", "teff", 5000.0, "test"),  # no m_h
                 ("c", "dr10", "logg", 2.0, "test"), ("c", "dr10", "teff", 4000.0, "test"),  # another source
                 ("c", "dr10", "m_h", 0.1, "test"),
                 ("d", "dr12", "logg", 2.7, "train"), ("d", "dr12", "teff", 4800.0, "train"),
                 ("d", "dr12", "m_h", 0.0, "train"))
    table = task_table(rows, task, "test")
    assert table["star_id"].to_list() == ["a"]
    assert table.row(0, named=True) == {"star_id": "a", "logg": 2.5, "teff": 4900.0, "m_h": -0.2,
                                        "logg__z": 0.25, "teff__z": 490.0, "m_h__z": pytest.approx(-0.02)}
    assert task_table(rows, task, "train")["star_id"].to_list() == ["d"]
    assert task_table(rows, TASK_BY_NAME["feh_from_colours"], "test").height == 0  # no such names at all


def test_subsample_is_seeded_keeps_order_and_leaves_small_tables_whole() -> None:
    table = pl.DataFrame({"star_id": [f"s{i:03d}" for i in range(100)]})
    picked = subsample(table, 10, seed=1)
    assert picked.height == 10 and picked["star_id"].is_sorted()
    assert picked.equals(subsample(table, 10, seed=1)) and not picked.equals(subsample(table, 10, seed=2))
    assert subsample(table, None, seed=1).equals(table) and subsample(table, 500, seed=1).equals(table)


def test_given_values_parse_and_bad_ones_are_one_clear_error() -> None:
    assert parse_given("teff=4900, M_H=-0.2") == {"teff": 4900.0, "m_h": -0.2}
    assert parse_given("") == {}
    for text, fragment in (("teff", "not name=value"), ("teff=hot", "not a number"), ("teff=inf", "finite"),
                           ("teff=nan", "finite"), ("teff=1,teff=2", "twice"), ("=3", "not name=value")):
        with pytest.raises(ValueError, match=fragment):
            parse_given(text)


def test_the_text_histogram_has_one_line_per_bin_and_counts_every_sample() -> None:
    lines = text_histogram([1.0, 1.1, 1.2, 5.0], bins=4, width=8)
    assert len(lines) == 4
    assert sum(int(line.split()[-1]) for line in lines) == 4
    assert lines[0].count("#") == 8 and math.isclose(float(lines[0].split()[0]), 1.0)


def test_source_balanced_weights_give_a_small_catalogue_a_larger_share_but_not_an_equal_one() -> None:
    from aion_assets.stellar.inference import source_balanced_weights

    units = pl.DataFrame({"star_id": [f"s{i}" for i in range(110)], "source": ["big"] * 100 + ["small"] * 10})
    share = {}
    for power in (0.0, 0.5, 1.0):
        weights = source_balanced_weights(units, power)
        share[power] = weights[100:].sum() / weights.sum()
    assert share[0.0] == pytest.approx(10 / 110) and share[1.0] == pytest.approx(0.5)
    assert share[0.0] < share[0.5] < share[1.0]
