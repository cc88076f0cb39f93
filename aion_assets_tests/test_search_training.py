"""Contrastive training on a small structured paired dataset: text = fixed random linear map of image + noise.

The task is learnable (a shared latent explains both sides) and hard before training (random heads rank each
text's own image near the middle of the validation set), so the bounds below fail if training does not learn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aion_assets.search.heads import AlignmentHeads
from aion_assets.search.training import (
    TrainConfig,
    clone_config,
    embed_images,
    embed_texts,
    evaluate_alignment,
    retrieval_ranks,
    seed_summary,
    train_alignment,
)

torch.set_num_threads(1)

IMAGE_DIM, TEXT_DIM = 32, 24
TINY = TrainConfig(hidden_dim=64, out_dim=32, n_blocks=2, dropout=0.0, epochs=14, batch_size=64, lr=3e-3,
                   weight_decay=0.01, warmup_fraction=0.1, seed=0, torch_threads=1, device="cpu")


def make_pairs(n: int, rng: np.random.Generator, mapping: np.ndarray, views: int = 2,
               noise: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    image = rng.normal(size=(n, IMAGE_DIM)).astype(np.float32)
    clean = image @ mapping
    # two noisy "texts" per image: like a description and a summary of the same picture
    text = np.stack([clean + noise * rng.normal(size=clean.shape) for _ in range(views)], axis=1)
    return image, text.astype(np.float32)


@pytest.fixture(scope="module")
def dataset() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    mapping = rng.normal(size=(IMAGE_DIM, TEXT_DIM)) / np.sqrt(IMAGE_DIM)
    image_train, text_train = make_pairs(400, rng, mapping)
    image_val, text_val = make_pairs(120, rng, mapping)
    return {"image_train": image_train, "text_train": text_train, "image_val": image_val, "text_val": text_val}


@pytest.fixture(scope="module")
def trained(dataset):
    epochs_seen: list[dict] = []
    result = train_alignment(dataset["image_train"], dataset["text_train"], dataset["image_val"],
                             dataset["text_val"], TINY, on_epoch=epochs_seen.append)
    return result, epochs_seen


def test_training_lowers_validation_loss_and_learns_retrieval(trained) -> None:
    result, _ = trained
    untrained, best = result.history[0], result.best_metrics
    assert untrained["epoch"] == 0 and untrained["train_loss"] is None
    assert untrained["val_mrr"] < 0.2 and untrained["val_median_rank"] > 10
    assert best["val_loss"] < 0.15 * untrained["val_loss"]
    assert best["val_mrr"] > 0.8
    assert best["val_median_rank"] == 1.0
    assert result.best_epoch >= 1
    # the training loss went down too, and the temperature moved from its start
    assert result.history[-1]["train_loss"] < result.history[1]["train_loss"]
    assert all(0.01 - 1e-6 <= row["temperature"] <= 0.2 for row in result.history)


def test_history_callback_and_schedule(trained) -> None:
    result, epochs_seen = trained
    assert [row["epoch"] for row in epochs_seen] == list(range(TINY.epochs + 1))
    assert epochs_seen == result.history
    for key in ("train_loss", "val_loss", "val_mrr", "val_median_rank", "val_recall_at_1", "temperature", "lr"):
        assert key in result.history[1]
    lrs = [row["lr"] for row in result.history[1:]]
    # 7 batches x 14 epochs, 10 % warm-up: the peak comes after the first epoch, then cosine decay to ~0
    peak = int(np.argmax(lrs))
    assert lrs[0] < lrs[peak] == pytest.approx(TINY.lr, rel=0.1)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))
    assert lrs[-1] < 0.01 * TINY.lr


def test_best_state_is_the_selected_checkpoint(trained, dataset) -> None:
    result, _ = trained
    selected = max(result.history, key=lambda row: (row["val_mrr"], -row["val_loss"]))
    assert result.best_epoch == selected["epoch"]
    heads = result.heads()
    again = evaluate_alignment(heads, torch.from_numpy(dataset["image_val"]), torch.from_numpy(dataset["text_val"]))
    assert again["val_mrr"] == pytest.approx(selected["val_mrr"], abs=1e-6)
    assert again["val_loss"] == pytest.approx(selected["val_loss"], rel=1e-5)


def test_same_seed_reproduces_and_other_seed_differs(dataset) -> None:
    config = clone_config(TINY, epochs=2)
    args = (dataset["image_train"], dataset["text_train"], dataset["image_val"], dataset["text_val"])
    first, second = train_alignment(*args, config), train_alignment(*args, config)
    other = train_alignment(*args, clone_config(config, seed=1))
    assert [r["val_loss"] for r in first.history] == [r["val_loss"] for r in second.history]
    assert first.history[-1]["val_loss"] != other.history[-1]["val_loss"]
    summary = seed_summary([first, other])
    assert summary["val_mrr"]["n"] == 2
    assert summary["val_mrr"]["min"] <= summary["val_mrr"]["mean"] <= summary["val_mrr"]["max"]


def test_missing_text_views_and_single_view_inputs(dataset) -> None:
    text_train = dataset["text_train"].copy()
    text_train[::3, 1] = np.nan  # a third of the images have no summary
    config = clone_config(TINY, epochs=3, patience=1)
    result = train_alignment(dataset["image_train"], text_train, dataset["image_val"], dataset["text_val"][:, 0],
                             config)
    assert result.history[-1]["val_mrr"] > result.history[0]["val_mrr"]
    assert np.isfinite([row["train_loss"] for row in result.history[1:]]).all()
    with pytest.raises(ValueError, match="no finite text view"):
        bad = text_train.copy()
        bad[0] = np.nan
        train_alignment(dataset["image_train"], bad, dataset["image_val"], dataset["text_val"], config)
    with pytest.raises(ValueError, match="row-aligned"):
        train_alignment(dataset["image_train"][:-1], text_train, dataset["image_val"], dataset["text_val"], config)


def test_patience_stops_early(dataset) -> None:
    # lr 0: nothing improves after epoch 0, so training stops after `patience` epochs
    config = clone_config(TINY, epochs=10, lr=0.0, patience=2)
    result = train_alignment(dataset["image_train"], dataset["text_train"], dataset["image_val"],
                             dataset["text_val"], config)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 0


def test_embed_images_and_texts_unit_norm_float32(trained, dataset, tmp_path) -> None:
    result, _ = trained
    heads = result.heads()
    memmap_path = tmp_path / "base.npy"
    np.save(memmap_path, dataset["image_val"])
    base = np.load(memmap_path, mmap_mode="r")
    images = embed_images(heads, base, batch=50, device="cpu")
    texts = embed_texts(heads, dataset["text_val"][:, 0], batch=1000, device="cpu")
    assert images.dtype == texts.dtype == np.float32
    assert images.shape == (120, TINY.out_dim) and texts.shape == (120, TINY.out_dim)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        direct = heads.encode_image(torch.from_numpy(dataset["image_val"])).numpy()
    assert np.allclose(images, direct, atol=1e-6)
    # the embeddings retrieve: each text's own image is usually first
    ranks = retrieval_ranks(torch.from_numpy(texts), torch.from_numpy(images))
    assert float(np.mean(ranks.numpy() == 1)) > 0.6
    assert embed_images(heads, np.zeros((0, IMAGE_DIM), np.float32)).shape == (0, TINY.out_dim)


def test_retrieval_ranks_by_hand() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    target = torch.tensor([[0.9, 0.1], [0.8, 0.6], [0.0, 1.0]])
    # query 0: own 0.9 is best -> 1; query 1: own 0.6 below 1.0 -> 2; query 2: own 0.0 below 0.9 and 0.8 -> 3
    assert retrieval_ranks(query, target).tolist() == [1, 2, 3]
    assert retrieval_ranks(query, target, own=torch.tensor([0, 2, 1])).tolist() == [1, 1, 2]


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError):
        TrainConfig(select_by="accuracy")
    assert isinstance(AlignmentHeads(4, 4, hidden_dim=8, out_dim=4), torch.nn.Module)


def test_image_views_train_with_single_view_validation(dataset) -> None:
    # eight noisy views of every training image, as the dihedral transforms' embeddings; validation: one view each
    rng = np.random.default_rng(11)
    image = dataset["image_train"]
    views = (image[:, None, :] + 0.3 * rng.normal(size=(len(image), 8, IMAGE_DIM))).astype(np.float32)
    result = train_alignment(views, dataset["text_train"], dataset["image_val"], dataset["text_val"],
                             clone_config(TINY, epochs=6))
    assert result.heads_config.image_dim == IMAGE_DIM
    untrained = result.history[0]["val_mrr"]
    assert untrained < 0.2
    assert result.best_metrics["val_mrr"] > untrained + 0.3
    assert result.best_epoch >= 1


def test_fixed_temperature_stays_at_its_initial_value(dataset) -> None:
    args = (dataset["image_train"], dataset["text_train"], dataset["image_val"], dataset["text_val"])
    fixed = train_alignment(*args, clone_config(TINY, epochs=3, learn_temperature=False, init_temperature=0.05))
    temperatures = {row["temperature"] for row in fixed.history}
    assert len(temperatures) == 1 and temperatures.pop() == pytest.approx(0.05, rel=1e-6)
    assert fixed.best_state["logit_scale"].item() == torch.tensor(np.log(1 / 0.05), dtype=torch.float32).item()
    # the heads still learn with the temperature held
    assert fixed.best_metrics["val_mrr"] > fixed.history[0]["val_mrr"]
    learned = train_alignment(*args, clone_config(TINY, epochs=3, init_temperature=0.05))
    assert learned.history[0]["temperature"] == pytest.approx(0.05, rel=1e-6)
    assert learned.history[-1]["temperature"] != pytest.approx(0.05, rel=1e-3)


def test_validation_images_must_be_one_view_each(dataset) -> None:
    three_d = np.repeat(dataset["image_val"][:, None, :], 2, axis=1)
    with pytest.raises(ValueError, match="validation images must be"):
        train_alignment(dataset["image_train"], dataset["text_train"], three_d, dataset["text_val"],
                        clone_config(TINY, epochs=1))
