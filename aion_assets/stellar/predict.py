"""`aion stellar predict`: one star's posterior for one label from whatever it is given. Pure: no dagster.

The checks here are what a person typing a command gets wrong: a misspelt name, a value that is not a number, a
target given as its own input. Each is a ValueError whose message is the one line the CLI prints.
"""

from __future__ import annotations

import math

import numpy as np

from aion_assets.stellar.catalog import Standardisation
from aion_assets.stellar.inference import sample_task, token_ids


def parse_given(text: str) -> dict[str, float]:
    """``"teff=4900,m_h=-0.2"`` -> {"teff": 4900.0, "m_h": -0.2}; an empty text gives nothing (the prior)."""
    given: dict[str, float] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = pair.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"--given: {pair!r} is not name=value")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--given: {name}={raw.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"--given: {name}={raw.strip()} is not a finite number")
        if name in given:
            raise ValueError(f"--given: {name} is given twice")
        given[name] = value
    return given


def posterior_samples(model, standardisation: Standardisation, given: dict[str, float], target: str,
                      n_samples: int, seed: int) -> np.ndarray:
    """``n_samples`` draws of ``target`` (physical units) for one star with the ``given`` values."""
    if n_samples < 1:
        raise ValueError("--samples must be at least 1")
    target = target.strip().lower()
    if target in given:
        raise ValueError(f"{target} is both the target and one of the given values")
    names = tuple(given)
    token_ids(model, (*names, target))  # unknown names fail here, all of them named at once
    z = np.array([[float(standardisation.standardise(name, given[name])) for name in names]], dtype=np.float64)
    samples = sample_task(model, names, z.reshape(1, len(names)), target, n_samples, seed)
    return standardisation.unstandardise(target, samples[0])


def text_histogram(samples: np.ndarray, bins: int = 12, width: int = 40) -> list[str]:
    """A small histogram of the samples, one line per bin, for a terminal."""
    counts, edges = np.histogram(samples, bins=bins)
    scale = width / max(int(counts.max()), 1)
    return [f"{low:>10.4g} .. {high:<10.4g} {'#' * int(round(count * scale)):<{width}} {count}"
            for low, high, count in zip(edges[:-1], edges[1:], counts)]
