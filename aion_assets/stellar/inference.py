"""Asking a trained emulator about many stars at once, and packing a long catalogue into its token tables.
Pure: numpy, polars and torch.

Names cross this boundary as strings: the token ids are the model's own (its config's vocabulary), so a model
trained on another catalogue's names is asked correctly or refuses a name it never saw.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from aion_assets.stellar.emulator import TokenTable, sample_arrays


def token_ids(model, names: tuple[str, ...] | list[str]) -> list[int]:
    """The model's token id of each name (its vocabulary index + 1; 0 is padding)."""
    vocabulary = list(model.config.names)
    unknown = [name for name in names if name not in vocabulary]
    if unknown:
        raise ValueError(f"unknown name(s) {', '.join(unknown)}; the model knows: {', '.join(vocabulary)}")
    return [vocabulary.index(name) + 1 for name in names]


def sample_task(model, input_names: tuple[str, ...], z_inputs: np.ndarray, target: str, n_samples: int,
                seed: int, device: str = "cpu") -> np.ndarray:
    """Standardised posterior samples [n_stars, n_samples] of ``target`` given the same ``input_names`` for every
    star (``z_inputs`` [n_stars, len(input_names)], standardised; NaN = not given)."""
    if target in input_names:
        raise ValueError(f"the target {target} cannot be one of its own inputs")
    (query_id,) = token_ids(model, [target])
    ids = np.asarray(token_ids(model, input_names), dtype=np.int64)
    values = np.asarray(z_inputs, dtype=np.float32).reshape(len(z_inputs), len(input_names))
    tokens = np.broadcast_to(ids[None, :], values.shape)
    return sample_arrays(model.to(device).eval(), values, tokens, query_id, n_samples, seed)


def star_units(measurements: pl.DataFrame) -> pl.DataFrame:
    """One row per (star_id, source) with its row index: one training example is one star as one catalogue
    measured it (a star in two catalogues is two examples, always in one split)."""
    return (measurements.select("star_id", "source").unique().sort("star_id", "source")
            .with_row_index("unit"))


def token_table(measurements: pl.DataFrame, names: tuple[str, ...]):
    """(:class:`TokenTable`, units) of long rows (star_id, source, name, z): the model's padded per-star arrays
    and, row for row, which (star_id, source) each holds."""
    units = star_units(measurements)
    rows = measurements.join(units, on=["star_id", "source"])
    name_index = {name: index for index, name in enumerate(names)}
    unknown = set(rows["name"].unique().to_list()) - set(name_index)
    if unknown:
        raise ValueError(f"names outside the vocabulary: {', '.join(sorted(unknown))}")
    table = TokenTable.from_rows(rows["unit"].to_numpy(), rows["name"].replace_strict(name_index).to_numpy(),
                                 rows["z"].to_numpy().astype(np.float32), units.height, tuple(names))
    return table, units


def source_balanced_weights(units: pl.DataFrame, power: float) -> np.ndarray:
    """A sampling weight per unit: n_source ** -power. 0 draws stars uniformly (a big catalogue dominates), 1 gives
    every catalogue the same share of each batch (a small one is seen over and over); in between, a small
    catalogue is seen more often without being memorised."""
    sizes = units.group_by("source").len()
    per_unit = units.join(sizes, on="source", how="left", maintain_order="left")["len"].to_numpy()
    return per_unit.astype(np.float64) ** -power
