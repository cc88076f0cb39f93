"""Projection heads, the learnable temperature, save/load, and the symmetric InfoNCE loss against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from aion_assets.search.heads import AlignmentHeads, ProjectionHead, load_heads, read_heads_metadata, save_heads
from aion_assets.search.losses import clip_loss

torch.set_num_threads(1)


def test_projection_head_output_shape_and_unit_norm() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(in_dim=40, hidden_dim=32, out_dim=16, n_blocks=3, dropout=0.1)
    x = torch.randn(7, 40) * 50.0
    for training in (True, False):
        head.train(training)
        out = head(x)
        assert out.shape == (7, 16)
        assert torch.allclose(out.norm(dim=1), torch.ones(7), atol=1e-5)
    assert len(head.blocks) == 3
    # each residual block is LayerNorm -> GELU -> Dropout -> Linear(hidden, hidden)
    block = head.blocks[0]
    assert isinstance(block.norm, torch.nn.LayerNorm) and block.linear.in_features == block.linear.out_features == 32


def test_projection_head_ignores_input_scale_because_it_normalises_input() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(in_dim=12, hidden_dim=24, out_dim=8).eval()
    x = torch.randn(5, 12)
    assert torch.allclose(head(x), head(x * 37.0), atol=1e-5)
    assert not torch.allclose(head(x), head(torch.randn(5, 12)), atol=1e-3)


def test_alignment_heads_shapes_and_initial_temperature() -> None:
    torch.manual_seed(0)
    model = AlignmentHeads(image_dim=20, text_dim=10, hidden_dim=16, out_dim=6, n_blocks=1).eval()
    image_emb, text_emb = model(torch.randn(4, 20), torch.randn(4, 10))
    assert image_emb.shape == text_emb.shape == (4, 6)
    assert torch.allclose(text_emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert model.temperature == pytest.approx(0.07, rel=1e-5)


def test_logit_scale_is_clamped_at_100() -> None:
    model = AlignmentHeads(image_dim=4, text_dim=4, hidden_dim=8, out_dim=4)
    with torch.no_grad():
        model.logit_scale.fill_(8.0)  # exp(8) ~ 2981 before the clamp
    assert math.exp(model.scale().item()) == pytest.approx(100.0, rel=1e-5)
    assert model.temperature == pytest.approx(0.01, rel=1e-5)
    # past the cap the loss no longer pushes the scale up: its gradient is zero
    image_emb, text_emb = model(torch.randn(6, 4), torch.randn(6, 4))
    clip_loss(image_emb, text_emb, model.scale()).backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.item() == 0.0
    model.clamp_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0), rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    assert model.scale().item() == pytest.approx(2.0)


def test_save_and_load_heads_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    model = AlignmentHeads(image_dim=12, text_dim=9, hidden_dim=16, out_dim=5, n_blocks=2, dropout=0.2)
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
    path = save_heads(model, tmp_path / "deep" / "heads.safetensors", extra_metadata={"mlflow_run_id": "abc"})
    loaded = load_heads(path)
    assert loaded.config == model.config
    assert loaded.logit_scale.item() == pytest.approx(3.3)
    assert not loaded.training
    image, text = torch.randn(3, 12), torch.randn(3, 9)
    model.eval()
    assert torch.equal(loaded.encode_image(image), model.encode_image(image))
    assert torch.equal(loaded.encode_text(text), model.encode_text(text))
    assert read_heads_metadata(path)["mlflow_run_id"] == "abc"
    assert not list(path.parent.glob("*.tmp"))


def test_load_heads_rejects_a_foreign_safetensors_file(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not an aion-search heads file"):
        load_heads(path)


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def test_clip_loss_matches_a_hand_computed_2x2_case() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    log_scale = math.log(2.0)
    # logits = 2 * image @ text.T = [[1.2, 2.0], [1.6, 0.0]]; positives on the diagonal
    logits = [[1.2, 2.0], [1.6, 0.0]]
    image_to_text = ((_logsumexp(logits[0]) - logits[0][0]) + (_logsumexp(logits[1]) - logits[1][1])) / 2
    columns = [[logits[0][0], logits[1][0]], [logits[0][1], logits[1][1]]]
    text_to_image = ((_logsumexp(columns[0]) - logits[0][0]) + (_logsumexp(columns[1]) - logits[1][1])) / 2
    expected = (image_to_text + text_to_image) / 2
    # by hand: rows 1.1711 and 1.7839 (mean 1.4775), columns 0.9130 and 2.1269 (mean 1.5200)
    assert expected == pytest.approx(1.4987, abs=1e-3)
    got = clip_loss(image, text, torch.tensor(log_scale))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_is_symmetric_and_lowest_for_matched_pairs() -> None:
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    other = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(math.log(1 / 0.07))
    assert clip_loss(emb, other, scale).item() == pytest.approx(clip_loss(other, emb, scale).item(), rel=1e-6)
    matched = clip_loss(emb, emb, scale).item()
    shuffled = clip_loss(emb, emb[torch.randperm(8)], scale).item()
    assert matched < 0.1 < shuffled
    with pytest.raises(ValueError):
        clip_loss(emb, other[:4], scale)


def test_an_ensemble_scores_the_mean_of_its_members_cosines_and_round_trips(tmp_path) -> None:
    from aion_assets.search.heads import HeadsEnsemble

    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(AlignmentHeads(image_dim=10, text_dim=6, hidden_dim=16, out_dim=4).eval())
    ensemble = HeadsEnsemble(members).eval()
    images, texts = torch.randn(5, 10), torch.randn(2, 6)
    vectors, queries = ensemble.encode_image(images), ensemble.encode_text(texts)
    assert vectors.shape == (5, 12) and ensemble.config.out_dim == 12
    assert torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    mean_cosine = sum(m.encode_image(images) @ m.encode_text(texts).T for m in members) / 3
    assert torch.allclose(vectors @ queries.T, mean_cosine, atol=1e-5)
    loaded = load_heads(save_heads(ensemble, tmp_path / "ensemble.safetensors", {"mlflow_run_id": "r1"}))
    assert isinstance(loaded, HeadsEnsemble) and len(loaded.members) == 3
    assert torch.allclose(loaded.encode_image(images), vectors, atol=1e-6)
    assert read_heads_metadata(tmp_path / "ensemble.safetensors")["ensemble_members"] == "3"
    with pytest.raises(ValueError, match="share one configuration"):
        HeadsEnsemble([members[0], AlignmentHeads(image_dim=10, text_dim=6, hidden_dim=16, out_dim=8)])
