"""Run configs of the zoo group. Defaults are the sizes this 2-core machine runs in minutes; a GPU run raises
them (``image_px``, ``base_width``, epochs) from the launchpad or a config file. Tests pass tiny ones."""


import dagster as dg


class ZooDatasetConfig(dg.Config):
    split_seed: int = 0
    train_fraction: float = 0.7
    validation_fraction: float = 0.1


class ZooModelsConfig(dg.Config):
    seeds: list[int] = [0, 1]
    image_px: int = 64
    base_width: int = 6  # widths 6, 12, 24: ~35k, ~140k, ~550k parameters (16x)
    max_epochs: int = 20  # evaluation rounds: an epoch, or several on small fractions (>= 25 steps each)
    patience: int = 3
    min_round_steps: int = 25
    batch_size: int = 64
    learning_rate: float = 1e-3  # dropped 0.3x after each round without a lower validation loss
    device: str = "auto"


class ZooEncoderConfig(dg.Config):
    image_px: int = 96
    max_epochs: int = 3
    patience: int = 1
    batch_size: int = 32
    learning_rate: float = 3e-4
    seed: int = 0
    # A seeded stratified share of the train split (1.0: all of it; tests use a sliver).
    train_fraction: float = 1.0
    device: str = "auto"


class TransferTaskConfig(dg.Config):
    """A label of a labelled release as a downstream task (a new release becomes a task here, not in code)."""

    name: str
    release: str
    label: str
    kind: str  # "classification" or "regression"
    positive: list[str] = ["1"]


class ZooScalingConfig(dg.Config):
    n_bootstrap: int = 1000
    seed: int = 0


class ZooTransferConfig(dg.Config):
    # None: the newest zoo_pretrained_encoder version.
    encoder_version: int | None = None
    # None: the five tasks of the study (ring, lens and three DECaLS vote fractions).
    tasks: list[TransferTaskConfig] | None = None
    n_splits: int = 5
    n_repeats: int = 2
    # End-to-end finetuning is ~100x a probe's cost on a CPU: it runs on the first `finetune_folds` folds (5: one
    # whole repeat, every object tested once; None: all of them, what a GPU run should do).
    finetune_folds: int | None = 5
    finetune_epochs: int = 4
    finetune_patience: int = 1
    finetune_batch_size: int = 32
    finetune_learning_rate: float = 3e-4
    seed: int = 0
    device: str = "auto"
