"""The scaling study's grid and model family: partition keys, parameter span, and a toy trained to a bound."""

from __future__ import annotations

from fractions import Fraction

import dagster as dg
import pytest
import torch

from aion_assets.zoo.assets import grid_point, zoo_grid
from aion_assets.zoo.models import FRACTIONS, SIZES, GridPoint, ZooCNN, build_model, count_parameters
from aion_assets.zoo.training import TrainConfig, classification_scores, predict_logits, train_classifier


def test_a_partition_key_maps_to_its_size_and_fraction() -> None:
    keys = zoo_grid.get_partition_keys()
    assert len(keys) == len(SIZES) * len(FRACTIONS) == 15
    point = grid_point(dg.MultiPartitionKey({"size": "large", "fraction": "1of4"}).keys_by_dimension)
    assert (point.size, point.fraction) == ("large", Fraction(1, 4))
    assert point.n_train(4000) == 1000 and GridPoint("small", "1of16").n_train(10) == 1
    assert {grid_point(k.keys_by_dimension).fraction for k in keys} == {Fraction(1, d) for d in (16, 8, 4, 2, 1)}
    with pytest.raises(ValueError, match="unknown model size"):
        GridPoint("huge", "1of1")
    with pytest.raises(ValueError, match="unknown training fraction"):
        GridPoint("small", "1of3")


def test_sizes_span_ten_times_the_parameters() -> None:
    params = {size: count_parameters(build_model(GridPoint(size, "1of1"), 5)) for size in SIZES}
    assert params["small"] < params["medium"] < params["large"]
    assert params["large"] / params["small"] >= 10


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a bright centred disc; class 1: a bright ring; class 2: empty noise. 32 px uint8."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    r = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()
    shapes = torch.stack([(r < 6).float(), ((r > 9) & (r < 12)).float(), torch.zeros(32, 32)])
    pixels = 40 + 150 * shapes[y] + 25 * torch.randn(n, 32, 32, generator=g)
    return pixels.clamp(0, 255).to(torch.uint8)[..., None].expand(n, 32, 32, 3).contiguous(), y


def test_a_toy_cnn_trains_to_a_bound_and_keeps_its_best_epoch() -> None:
    torch.set_num_threads(1)
    train_x, train_y = _blobs(240, 0)
    val_x, val_y = _blobs(90, 1)
    test_x, test_y = _blobs(90, 2)
    model = ZooCNN(3, width=4)
    before = classification_scores(predict_logits(model, test_x), test_y)
    result = train_classifier(model, train_x, train_y, val_x, val_y,
                              TrainConfig(max_epochs=6, patience=3, batch_size=32, learning_rate=5e-3,
                                          min_round_steps=16))
    after = classification_scores(predict_logits(result.model, test_x), test_y)
    assert after["error"] < 0.1 < before["error"]
    assert after["loss"] < before["loss"]
    best = min(result.curves, key=lambda row: row["validation_loss"])
    assert result.best_epoch == best["epoch"]
    assert [row["epoch"] for row in result.curves][:2] == [2, 4]  # 8 steps an epoch: rounds of two epochs
    assert result.best_validation_loss == pytest.approx(best["validation_loss"], abs=1e-4)
