"""The Galaxy Zoo Dirichlet-multinomial loss: exact against scipy, zero-vote questions inert, and it trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import dirichlet_multinomial

from aion_assets.zoo.losses import (
    GZ1_TREE,
    GZ_DECALS_SMOOTH_FEATURED_TREE,
    DecisionTree,
    Question,
    concentrations_from_logits,
    dirichlet_multinomial_log_prob,
    dirichlet_multinomial_loss,
    majority_class_cross_entropy,
    vote_fractions,
)

TWO_QUESTIONS = DecisionTree((Question("q1", ("a", "b", "c")), Question("q2", ("yes", "no"))))


def test_trees_lay_out_their_answer_columns() -> None:
    tree = GZ_DECALS_SMOOTH_FEATURED_TREE
    assert tree.n_answers == 7
    assert tree.slices() == [(0, 3), (3, 5), (5, 7)]
    assert tree.answer_columns()[:4] == ["smooth_or_featured_smooth", "smooth_or_featured_featured_or_disk",
                                         "smooth_or_featured_artifact", "disk_edge_on_yes"]
    assert GZ1_TREE.n_answers == 5 and GZ1_TREE.slices() == [(0, 5)]
    assert "gz1_class_spiral" in GZ1_TREE.answer_columns()


def test_invalid_trees_are_rejected() -> None:
    with pytest.raises(ValueError, match="no answers"):
        Question("empty", ())
    with pytest.raises(ValueError, match="duplicate answers"):
        Question("q", ("a", "a"))
    with pytest.raises(ValueError, match="duplicate question names"):
        DecisionTree((Question("q", ("a", "b")), Question("q", ("c", "d"))))
    with pytest.raises(ValueError, match="at least one question"):
        DecisionTree(())


def test_log_prob_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 7))
        counts = rng.integers(0, 41, size=k)
        if counts.sum() == 0:
            counts[0] = 1
        alpha = rng.uniform(0.3, 50.0, size=k)
        expected = dirichlet_multinomial.logpmf(counts, alpha, int(counts.sum()))
        got = dirichlet_multinomial_log_prob(torch.tensor(counts[None], dtype=torch.float64),
                                             torch.tensor(alpha[None], dtype=torch.float64))
        assert got.shape == (1,)
        np.testing.assert_allclose(got.item(), expected, rtol=1e-8)


def test_zero_vote_rows_give_exactly_zero() -> None:
    got = dirichlet_multinomial_log_prob(torch.zeros(3, 4, dtype=torch.float64),
                                         torch.rand(3, 4, dtype=torch.float64) * 10 + 0.5)
    assert torch.equal(got, torch.zeros(3, dtype=torch.float64))


def test_a_question_with_zero_votes_contributes_nothing() -> None:
    torch.manual_seed(0)
    counts = torch.cat([torch.randint(0, 20, (4, 3)).double() + 1, torch.zeros(4, 2, dtype=torch.float64)], dim=1)
    concentrations = (torch.rand(4, 5, dtype=torch.float64) * 20 + 1).requires_grad_(True)
    loss = dirichlet_multinomial_loss(counts, concentrations, TWO_QUESTIONS, reduction="none")
    alone = -dirichlet_multinomial_log_prob(counts[:, :3], concentrations[:, :3].detach())
    assert torch.equal(loss.detach(), alone)
    loss.sum().backward()
    assert torch.equal(concentrations.grad[:, 3:], torch.zeros(4, 2, dtype=torch.float64))
    assert (concentrations.grad[:, :3] != 0).all()


def test_reductions() -> None:
    counts = torch.tensor([[3.0, 1.0, 0.0, 2.0, 2.0], [0.0, 5.0, 1.0, 0.0, 0.0]])
    concentrations = torch.full((2, 5), 2.0)
    per_galaxy = dirichlet_multinomial_loss(counts, concentrations, TWO_QUESTIONS, reduction="none")
    assert per_galaxy.shape == (2,) and (per_galaxy > 0).all()
    torch.testing.assert_close(dirichlet_multinomial_loss(counts, concentrations, TWO_QUESTIONS), per_galaxy.mean())
    torch.testing.assert_close(dirichlet_multinomial_loss(counts, concentrations, TWO_QUESTIONS, reduction="sum"),
                               per_galaxy.sum())
    with pytest.raises(ValueError, match="reduction"):
        dirichlet_multinomial_loss(counts, concentrations, TWO_QUESTIONS, reduction="max")


def test_gz1_loss_falls_as_the_true_class_concentration_rises() -> None:
    counts = torch.zeros(1, 5, dtype=torch.float64)
    counts[0, 1] = 1.0  # one vote, for "spiral"
    losses = []
    for alpha_true in (0.5, 1.0, 2.0, 5.0, 20.0, 80.0):
        concentrations = torch.full((1, 5), 2.0, dtype=torch.float64)
        concentrations[0, 1] = alpha_true
        losses.append(dirichlet_multinomial_loss(counts, concentrations, GZ1_TREE).item())
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))


def test_shape_errors_name_the_expected_width() -> None:
    tree = GZ_DECALS_SMOOTH_FEATURED_TREE
    with pytest.raises(ValueError, match="7"):
        dirichlet_multinomial_loss(torch.zeros(2, 6), torch.ones(2, 6), tree)
    with pytest.raises(ValueError, match="7"):
        dirichlet_multinomial_loss(torch.zeros(2, 7), torch.ones(2, 5), tree)
    with pytest.raises(ValueError):
        dirichlet_multinomial_loss(torch.zeros(2, 7), torch.ones(3, 7), tree)
    with pytest.raises(ValueError):
        dirichlet_multinomial_loss(torch.zeros(7), torch.ones(7), tree)
    with pytest.raises(ValueError):
        dirichlet_multinomial_log_prob(torch.zeros(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="7"):
        vote_fractions(torch.ones(2, 3), tree)


def test_vote_fractions_sum_to_one_within_each_question() -> None:
    torch.manual_seed(1)
    tree = GZ_DECALS_SMOOTH_FEATURED_TREE
    fractions = vote_fractions(concentrations_from_logits(torch.randn(6, tree.n_answers)), tree)
    assert fractions.shape == (6, 7) and (fractions > 0).all()
    for start, end in tree.slices():
        torch.testing.assert_close(fractions[:, start:end].sum(dim=1), torch.ones(6))


def test_concentrations_are_bounded() -> None:
    alpha = concentrations_from_logits(torch.tensor([-1e4, 0.0, 1e4]), low=1.0, high=100.0)
    torch.testing.assert_close(alpha, torch.tensor([1.0, 50.5, 100.0]))


def test_majority_class_cross_entropy_wraps_torch() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    weights = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(majority_class_cross_entropy(logits, targets),
                               torch.nn.functional.cross_entropy(logits, targets))
    torch.testing.assert_close(majority_class_cross_entropy(logits, targets, weights),
                               torch.nn.functional.cross_entropy(logits, targets, weight=weights))


def _toy_votes(rng: np.random.Generator, weights: list[np.ndarray], n: int) -> tuple[np.ndarray, ...]:
    """Features, true vote probabilities and multinomial counts with random totals (often 0 for follow-ups)."""
    features = rng.normal(size=(n, weights[0].shape[0]))
    probs, counts = [], []
    for i, w in enumerate(weights):
        logits = features @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        totals = rng.integers(5, 40, size=n)
        if i > 0:  # follow-up questions: nobody was asked for ~40% of galaxies
            totals = np.where(rng.random(n) < 0.4, 0, rng.integers(0, 30, size=n))
        probs.append(p)
        counts.append(rng.multinomial(totals, p))
    return features, np.concatenate(probs, axis=1), np.concatenate(counts, axis=1)


def test_a_linear_model_learns_the_vote_fractions() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tree = GZ_DECALS_SMOOTH_FEATURED_TREE
    n_features = 4
    weights = [rng.normal(scale=1.5, size=(n_features, len(q.answers))) for q in tree.questions]
    x_train, _, c_train = _toy_votes(rng, weights, 600)
    x_test, p_test, c_test = _toy_votes(rng, weights, 300)
    assert (c_train[:, 3:5].sum(axis=1) == 0).any()  # the zero-vote path is exercised
    x_train, c_train = torch.tensor(x_train, dtype=torch.float32), torch.tensor(c_train, dtype=torch.float32)
    x_test, p_test = torch.tensor(x_test, dtype=torch.float32), torch.tensor(p_test, dtype=torch.float32)

    model = torch.nn.Linear(n_features, tree.n_answers)

    def held_out_mae() -> float:
        with torch.no_grad():
            predicted = vote_fractions(concentrations_from_logits(model(x_test)), tree)
        return (predicted - p_test).abs().mean().item()

    untrained = held_out_mae()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        loss = dirichlet_multinomial_loss(c_train, concentrations_from_logits(model(x_train)), tree)
        loss.backward()
        optimiser.step()
    trained = held_out_mae()
    print(f"untrained MAE {untrained:.4f}, trained MAE {trained:.4f}")
    assert trained < 0.1
    assert untrained > 0.15 and untrained > 3 * trained
