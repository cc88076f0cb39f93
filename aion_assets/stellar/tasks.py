"""The questions the one emulator is asked, and the test stars each is asked about. Pure: polars only.

A task is a target label, the inputs it is given and the catalogue whose test stars it is scored on. Each task is
also asked with its inputs removed one at a time (variant ``without_<name>``), so the table shows what each
measurement is worth; the variant ``all`` gives every input. The same trained model answers all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

ABUNDANCES = ("al_h", "ca_h", "c_h", "fe_h", "k_h", "mg_h", "mn_h", "na_h", "ni_h", "n_h", "o_h", "si_h", "s_h",
              "ti_h", "v_h")
ALL_INPUTS = "all"


@dataclass(frozen=True)
class Task:
    name: str
    target: str
    inputs: tuple[str, ...]
    source: str
    description: str

    def variants(self) -> list[tuple[str, tuple[str, ...]]]:
        """(variant, inputs): every input, then each input left out once."""
        left_out = [(f"without_{name}", tuple(n for n in self.inputs if n != name)) for name in self.inputs]
        return [(ALL_INPUTS, self.inputs), *left_out]


TASKS: tuple[Task, ...] = (
    Task("feh_from_colours", "fe_h", ("u_g", "g_r", "r_i", "i_z"), "segue", "[Fe/H] from u-g, g-r, r-i, i-z"),
    Task("teff_from_2mass", "teff", ("j_h", "j_k", "m_h"), "apogee_dr10", "Teff from J-H, J-K and [M/H]"),
    Task("logg_from_teff_mh", "logg", ("teff", "m_h"), "apogee_dr12", "logg from Teff and [M/H]"),
    Task("alpha_from_abundances", "alpha_m", ABUNDANCES, "apogee_dr12", "[alpha/M] from the 15 abundances"),
)
TASK_BY_NAME = {task.name: task for task in TASKS}


def task_table(measurements: pl.DataFrame, task: Task, split: str = "test") -> pl.DataFrame:
    """One row per star of ``task.source`` in ``split`` that has the target and every input: star_id, then one
    column per name holding the physical value, then the same names suffixed ``__z`` holding the standardised
    value. Stars missing any of them (a quarantined value, say) are not asked: a leave-one-out variant must be
    asked about the same stars as the full one."""
    names = [task.target, *task.inputs]
    rows = measurements.filter((pl.col("source") == task.source) & (pl.col("split") == split)
                               & pl.col("name").is_in(names))
    wide = rows.pivot(on="name", index="star_id", values=["value", "z"], aggregate_function="first")
    wanted = [f"value_{n}" for n in names] + [f"z_{n}" for n in names]
    for column in wanted:  # a name no star of the split has: the task has no stars
        if column not in wide.columns:
            return pl.DataFrame(schema={"star_id": pl.String, **{n: pl.Float64 for n in names},
                                        **{f"{n}__z": pl.Float64 for n in names}})
    wide = wide.drop_nulls(wanted).sort("star_id")
    return wide.select("star_id", *[pl.col(f"value_{n}").alias(n) for n in names],
                       *[pl.col(f"z_{n}").alias(f"{n}__z") for n in names])


def subsample(table: pl.DataFrame, limit: int | None, seed: int) -> pl.DataFrame:
    """At most ``limit`` rows, a seeded sample that keeps the star order (``None``: all of them)."""
    if limit is None or table.height <= limit:
        return table
    return table.sample(n=limit, seed=seed).sort("star_id")
