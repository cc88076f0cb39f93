"""Transfer tasks from configuration, the probe and the finetune path, the fold summary; and the finetuned
backbone read back as the search's image encoder."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from aion_assets.encoders.finetuned import (
    FinetunedEncoderMissing,
    encoder_trained_on,
    zoo_encoder_spec,
    zoo_encoder_version,
)
from aion_assets.encoders.image import canonical_image_encoder, load_image_encoder
from aion_assets.encoders.resources import image_encoder_id
from aion_assets.platform.layout import zoo_encoder_card_path, zoo_encoder_trained_on_path, zoo_encoder_weights_path
from aion_assets.zoo.backbone import Lite0Network, embed_pixels, save_backbone
from aion_assets.zoo.evaluation import reductions, tasks_from_config
from aion_assets.zoo.training import TrainConfig
from aion_assets.zoo.transfer import (
    DEFAULT_TASKS,
    TransferTask,
    error_of,
    finetune_predict,
    linear_probe,
    summarise_folds,
    task_objects,
)


def test_a_labelled_release_becomes_a_task_by_configuration() -> None:
    cutouts = pl.DataFrame({"release": ["new"] * 4 + ["gz-decals-rings"], "object_id": ["a", "b", "c", "d", "r"],
                            "sha256": ["s1", "s2", "s3", "s4", "s5"], "shard": ["0000"] * 5, "row": [0, 1, 2, 3, 0]})
    labels = pl.DataFrame({"release": ["new"] * 4, "object_id": ["a", "b", "c", "d"], "name": ["bar"] * 4,
                           "value": ["strong", "weak", "none", "strong"]})

    class Spec:  # what the Dagster config hands over
        name, release, label, kind, positive = "bars", "new", "bar", "classification", ["strong", "weak"]

    (task,) = tasks_from_config([Spec()])
    rows = task_objects(task, cutouts, labels, excluded_sha256=pl.Series(["s4"]))
    assert rows["object_id"].to_list() == ["a", "b", "c"] and rows["y"].to_list() == [1.0, 1.0, 0.0]
    assert tasks_from_config(None) == DEFAULT_TASKS and len(DEFAULT_TASKS) == 5
    with pytest.raises(ValueError, match="kind"):
        TransferTask("x", "new", "bar", "ranking")
    numbers = TransferTask("f", "new", "bar", "regression")
    with pytest.raises(ValueError, match="not numbers"):
        task_objects(numbers, cutouts, labels)


def test_errors_are_error_rate_or_rmse() -> None:
    y = np.array([1.0, 0.0, 1.0, 0.0])
    assert error_of("classification", y, np.array([0.9, 0.6, 0.2, 0.1])) == 0.5
    assert error_of("regression", np.array([0.2, 0.4]), np.array([0.5, 0.0])) == pytest.approx(np.sqrt(0.125))


def test_the_linear_probe_learns_a_linear_signal() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 20))
    labels = (features[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(float)
    fraction = 1 / (1 + np.exp(-features[:, 1]))
    probs = linear_probe("classification", features[:200], labels[:200], features[200:])
    assert error_of("classification", labels[200:], probs) < 0.2  # chance: 0.5; label noise alone: ~0.1
    values = linear_probe("regression", features[:200], fraction[:200], features[200:])
    assert error_of("regression", fraction[200:], values) < 0.5 * fraction[200:].std()
    assert values.min() >= 0 and values.max() <= 1


def test_fold_summary_and_paired_reduction() -> None:
    rows = []
    for fold in range(4):
        for encoder, error in (("imagenet", 0.4 + 0.02 * fold), ("zoo-lite0-v1", 0.2 + 0.02 * fold)):
            rows.append({"task": "ring", "encoder": encoder, "method": "linear_probe", "fold": fold,
                         "metric": "error_rate", "value": error, "n_train": 80, "n_test": 20})
    folds = pl.DataFrame(rows)
    summary = summarise_folds(folds)
    imagenet = summary.filter(pl.col("encoder") == "imagenet").row(0, named=True)
    assert imagenet["value"] == pytest.approx(0.43) and imagenet["value_lo"] < 0.43 < imagenet["value_hi"]
    assert imagenet["n_folds"] == 4
    reduction = reductions(folds, "zoo-lite0-v1")
    ring = reduction.filter(pl.col("task") == "ring").row(0, named=True)
    expected = np.mean([(0.4 + 0.02 * f - 0.2 - 0.02 * f) / (0.4 + 0.02 * f) for f in range(4)])
    assert ring["reduction"] == pytest.approx(expected)
    assert reduction.filter(pl.col("task") == "average")["reduction"][0] == pytest.approx(expected)


def _pixels(n: int, side: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    pixels = 60 + 120 * y[:, None, None, None].float() + 20 * torch.randn(n, side, side, 3, generator=g)
    return pixels.clamp(0, 255).to(torch.uint8), y.numpy().astype(float)


def test_finetuning_trains_every_weight_and_predicts_probabilities() -> None:
    torch.set_num_threads(1)
    train_x, train_y = _pixels(24, 32, 0)
    test_x, test_y = _pixels(8, 32, 1)
    made = []

    def make(n_outputs: int) -> Lite0Network:
        made.append(Lite0Network(n_outputs, 32))
        return made[-1]

    before = {k: v.clone() for k, v in Lite0Network(2, 32).backbone.state_dict().items()}
    probs = finetune_predict("classification", make, train_x, train_y, test_x,
                             TrainConfig(max_epochs=2, patience=2, batch_size=8, learning_rate=1e-3))
    assert probs.shape == (8,) and ((probs >= 0) & (probs <= 1)).all()
    after = made[0].backbone.state_dict()
    assert not torch.equal(before["_conv_stem.weight"], after["_conv_stem.weight"])  # end to end, not a probe
    values = finetune_predict("regression", make, train_x, train_y * 0.5 + 0.25, test_x,
                              TrainConfig(max_epochs=1, patience=1, batch_size=8))
    assert ((values > 0) & (values < 1)).all()


def test_the_finetuned_backbone_is_the_search_encoder_it_names(lake, tmp_path) -> None:
    torch.set_num_threads(1)
    assert zoo_encoder_version("zoo-lite0-v3") == 3 and zoo_encoder_version("zoo-lite0-v3-fp32") == 3
    assert zoo_encoder_version("efficientnet-lite0") is None and zoo_encoder_spec(2) == "zoo-lite0-v2"
    assert canonical_image_encoder("ZOO-LITE0-V2") == "zoo-lite0-v2"
    assert image_encoder_id("zoo-lite0-v2", "fp32") == "zoo-lite0-v2-fp32"
    with pytest.raises(ValueError, match="zoo-lite0-v<N>"):
        canonical_image_encoder("zoo-lite0")
    with pytest.raises(FinetunedEncoderMissing, match="zoo_pretrained_encoder"):
        load_image_encoder("zoo-lite0-v7", lake=lake)

    network = Lite0Network(5, 64)
    with torch.no_grad():
        network.backbone._conv_stem.weight.mul_(1.5)  # not the ImageNet weights any more
    local = tmp_path / "backbone.pt"
    save_backbone(network, local)
    lake.write_bytes(local.read_bytes(), *zoo_encoder_weights_path(7))
    lake.write_bytes(json.dumps({"image_size": 64}).encode(), *zoo_encoder_card_path(7))
    trained = pl.DataFrame({"release": ["gz1-sdss"], "object_id": ["a"], "sha256": ["s"], "split": ["train"]})
    lake.write_parquet(trained, *zoo_encoder_trained_on_path(7))

    encoder = load_image_encoder("zoo-lite0-v7", lake=lake)
    assert encoder.name == "zoo-lite0-v7-64px" and encoder.image_size == 64
    pixels = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    expected = embed_pixels(network, pixels).numpy()
    imagenet = load_image_encoder("efficientnet-lite0", image_size=64).encode_batch(pixels.numpy())
    got = encoder.encode_batch(pixels.numpy())
    assert np.allclose(got, expected, atol=1e-3)  # BatchNorm fused in the encoder: equal up to rounding
    assert not np.allclose(got, imagenet, atol=1e-2)
    assert encoder_trained_on(lake, "zoo-lite0-v7-fp32")["object_id"].to_list() == ["a"]
    assert encoder_trained_on(lake, "efficientnet-lite0").is_empty()
