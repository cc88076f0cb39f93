"""The stellar group's resource (where the tables are) and the run configs of its assets.

The defaults are real sizes: the CPU preset trains here in minutes; `preset: reference` is the paper's sizes for
a GPU. Tests pass tiny configs.
"""


from pathlib import Path
from typing import Literal

import dagster as dg


class StellarDataResource(dg.ConfigurableResource):
    """The folder holding the three stellar tables (AION_STELLAR_DIR)."""

    folder: str

    def path(self) -> Path:
        path = Path(self.folder)
        if not path.is_dir():
            raise dg.Failure(f"stellar tables not found: AION_STELLAR_DIR={self.folder!r} is not a folder")
        return path


class StellarCatalogConfig(dg.Config):
    split_seed: int = 0
    train_fraction: float = 0.7
    validation_fraction: float = 0.1


class StellarEmulatorConfig(dg.Config):
    preset: Literal["cpu", "reference"] = "cpu"
    steps: int = 4500  # about 85 passes over the ~27k training stars at batch 512 (~10 min on 2 CPU cores)
    batch_size: int = 512
    learning_rate: float = 2e-3
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present
    eval_every: int = 250
    # Diffusion draws per star and step: one encoder pass, several denoising targets (a far less noisy gradient).
    noise_draws: int = 8
    # Batches drawn with weight n_source ** -source_balance: DR10's ~350 training stars are not drowned by
    # SEGUE's ~20k (0: uniform over stars; 1: every catalogue an equal share).
    source_balance: float = 0.5
    # Each overrides the preset (tests use tiny models).
    embedding_dim: int | None = None
    num_layers: int | None = None
    head_layers: int | None = None
    head_width: int | None = None
    diffusion_steps: int | None = None


class StellarPosteriorsConfig(dg.Config):
    n_samples: int = 200
    # Seeded subsets of each task's test stars keep the CPU sampling in minutes (~3k samples/s on 2 cores);
    # None asks about every test star (what a GPU run should do).
    max_stars: int | None = 500
    max_stars_left_out: int | None = 150
    seed: int = 0
    device: str = "auto"


class StellarEvalConfig(dg.Config):
    seed: int = 0
    # The DR10 task has ~100 test stars: its baselines are also fitted on this many re-drawn splits of DR10
    # and the spread of their figures reported; the emulator's spread is a bootstrap over its test stars.
    repeated_splits: int = 5
    spread_below_n: int = 300  # a task variant with fewer test stars than this gets spreads
    bootstrap: int = 200
    gaussian_epochs: int = 200
