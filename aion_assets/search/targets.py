"""Evaluation targets: rare classes that the sample releases label, each with the query a user would type.

Pools are the release that publishes the label, so relevance is known for every object ranked. Nobody curated
these into the descriptions: the description sample is random, and described objects are left out of the pools.
"""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass


@dataclass(frozen=True)
class Target:
    name: str
    query: str
    release: str
    label: str
    relevant_values: tuple[str, ...]


TARGETS: tuple[Target, ...] = (
    Target("spiral_arms", "a spiral galaxy with well-defined spiral arms", "gz1-sdss", "gz1_class",
           ("spiral_clockwise", "spiral_anticlockwise")),
    Target("mergers", "merging galaxies with tidal tails, two interacting galaxies", "gz1-sdss", "gz1_class",
           ("merger",)),
    Target("edge_on_disks", "an edge-on disk galaxy", "gz1-sdss", "gz1_class", ("edge_on",)),
    Target("rings", "a ring galaxy with a prominent ring around the centre", "gz-decals-rings", "ring", ("1",)),
    Target("lenses", "a gravitational lens with blue arcs around a red galaxy", "spacewarps-cfhtls", "is_lens",
           ("1",)),
)


# What the demo types, and what the hubness and artefact figures look at: the evaluation targets' kind of query,
# and the three that brought satellite trails and saturated stars to the top 10 on other surveys.
DEMO_QUERIES: tuple[str, ...] = (
    "merging galaxies with tidal tails",
    "a ring galaxy with a prominent ring around the centre",
    "a gravitational lens with blue arcs around a red galaxy",
    "a gravitational lens arc",
    "an edge-on galaxy with a dust lane",
    "a galaxy with a tidal stream",
)


def targets_version(targets: tuple[Target, ...] = TARGETS) -> str:
    """A short hash of the targets and their queries: part of retrieval_eval's code version, so a changed
    query marks the evaluation as changed."""
    return hashlib.sha256(repr([astuple(t) for t in targets]).encode()).hexdigest()[:8]
