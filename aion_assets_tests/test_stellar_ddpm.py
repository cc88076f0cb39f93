"""The DDPM head alone: its beta schedule, reproducible sampling, and that it learns a 2-D and a conditional density."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import make_moons

from aion_assets.stellar.ddpm import ConditionalDenoiser, DiffusionHead, NoiseSchedule, make_betas

torch.set_num_threads(1)


def _fit(head: DiffusionHead, x: torch.Tensor, cond: torch.Tensor | None, steps: int, lr: float = 1e-2,
         batch_size: int = 256, seed: int = 0) -> DiffusionHead:
    """A short one-cycle AdamW run on random minibatches of (x, cond)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, fused=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.05)
    for _ in range(steps):
        index = torch.randint(0, len(x), (batch_size,), generator=generator)
        loss = head.loss(x[index], None if cond is None else cond[index], generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return head


def _knn_kl(p: torch.Tensor, q: torch.Tensor, k: int = 5) -> float:
    """KL(P || Q) from samples by k-nearest-neighbour distances (Wang, Kulkarni & Verdu 2009)."""
    n, d = p.shape
    exact = "donot_use_mm_for_euclid_dist"  # the matrix-product shortcut can round a tiny distance to 0
    within = torch.cdist(p, p, compute_mode=exact)
    within.fill_diagonal_(float("inf"))
    rho = within.kthvalue(k, dim=1).values
    nu = torch.cdist(p, q, compute_mode=exact).kthvalue(k, dim=1).values
    return float(d * torch.log(nu / rho).mean() + math.log(len(q) / (n - 1)))


def test_sigmoid_schedule_is_monotone_within_its_bounds() -> None:
    schedule = NoiseSchedule(num_steps=120, beta_start=1e-5, beta_end=0.1, schedule="sigmoid")
    betas = schedule.betas
    assert betas.shape == (120,)
    assert bool((betas[1:] > betas[:-1]).all())
    assert 1e-5 <= float(betas.min()) and float(betas.max()) <= 0.1
    # sigmoid(+-6) is within 0.25% of 0 and 1, so the ends nearly reach the nominal values
    assert float(betas[0]) == pytest.approx(1e-5 + 0.1 * 0.0025, rel=0.05)
    assert float(betas[-1]) == pytest.approx(0.1, rel=0.01)
    # slow start (fine detail resolved over many small steps), then a ramp
    assert float(betas[:20].max()) < 0.002 and float(betas[60]) == pytest.approx(0.05, rel=0.05)
    assert torch.allclose(schedule.alphas, 1 - betas)
    assert bool((schedule.alphas_cumprod[1:] < schedule.alphas_cumprod[:-1]).all())
    # x_T is noise to within a few percent of the data scale
    assert float(schedule.sqrt_alphas_cumprod[-1]) < 0.1
    assert schedule.state_dict() == {}  # derived from the config, never saved


def test_linear_schedule_and_bad_arguments() -> None:
    betas = make_betas(50, 1e-4, 0.02, "linear")
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    assert torch.allclose(betas[1:] - betas[:-1], torch.full((49,), (0.02 - 1e-4) / 49, dtype=betas.dtype))
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas(50, schedule="cosine-ish")
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        make_betas(50, 0.1, 0.01)


def test_denoiser_layers_add_time_and_condition_terms() -> None:
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(dim=3, cond_dim=5, num_steps=10, width=16, n_layers=4)
    x, cond = torch.randn(6, 3), torch.randn(6, 5)
    t = torch.tensor([0, 1, 2, 3, 4, 9])
    out = denoiser(x, t, cond)
    assert out.shape == (6, 3)
    # the time step and the condition both change the prediction
    assert not torch.allclose(out, denoiser(x, torch.full((6,), 5), cond))
    assert not torch.allclose(out, denoiser(x, t, torch.randn(6, 5)))
    # a scalar step is shared by every row
    assert torch.allclose(denoiser(x, torch.tensor(3), cond), denoiser(x, torch.full((6,), 3), cond))
    assert len(denoiser.layers) == len(denoiser.time_embeddings) == len(denoiser.cond_maps) == 4
    assert ConditionalDenoiser(dim=2, cond_dim=0).cond_maps is None


def test_sampling_is_reproducible_with_a_fixed_generator() -> None:
    torch.manual_seed(0)
    head = DiffusionHead(dim=2, cond_dim=3, num_steps=30, width=16, n_layers=2)
    cond = torch.randn(4, 3)
    first = head.sample(cond, 7, generator=torch.Generator().manual_seed(11))
    again = head.sample(cond, 7, generator=torch.Generator().manual_seed(11))
    other = head.sample(cond, 7, generator=torch.Generator().manual_seed(12))
    assert first.shape == (4, 7, 2)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    loss = head.loss(torch.randn(5, 2), torch.randn(5, 3), generator=torch.Generator().manual_seed(1))
    assert loss.ndim == 0 and loss.item() > 0
    with pytest.raises(ValueError, match="condition"):
        head.sample(None, 3)


def test_head_learns_two_moons_and_an_untrained_head_does_not() -> None:
    points, _ = make_moons(6000, noise=0.1, random_state=0)
    x = torch.tensor(points, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    train, held_out = x[:5000], x[5000:]
    torch.manual_seed(0)
    head = DiffusionHead(dim=2, num_steps=120, width=128, n_layers=3)
    untrained = head.sample(None, 1000, generator=torch.Generator().manual_seed(1))[0]
    _fit(head, train, None, steps=800)
    learned = head.sample(None, 1000, generator=torch.Generator().manual_seed(1))[0]
    # a Gaussian with the data's mean and covariance: what a head that only got the first two moments would give
    gaussian = torch.randn(1000, 2, generator=torch.Generator().manual_seed(2)) @ torch.linalg.cholesky(
        torch.cov(train.T)).T + train.mean(0)
    bound = 0.55  # 800-step runs give ~0.38 (seeds 0-2), another sample of the data itself ~0.0
    assert _knn_kl(held_out, learned) < bound
    assert _knn_kl(held_out, gaussian) > bound + 0.25  # ~0.95
    assert _knn_kl(held_out, untrained) > 2.0


def test_conditional_head_recovers_both_modes_of_a_mixture() -> None:
    # y | c is an equal mixture of N(c - 2, 0.3) and N(c + 2, 0.3): bimodal, and the modes move with c
    generator = torch.Generator().manual_seed(0)
    n = 6000
    c = torch.rand(n, 1, generator=generator) * 2 - 1
    side = torch.randint(0, 2, (n, 1), generator=generator) * 2.0 - 1.0
    y = c + 2.0 * side + 0.3 * torch.randn(n, 1, generator=generator)
    torch.manual_seed(0)
    head = _fit(DiffusionHead(dim=1, cond_dim=1, num_steps=120, width=64, n_layers=3), y, c, steps=400)
    query = torch.tensor([[-0.6], [0.5]])
    samples = head.sample(query, 2000, generator=torch.Generator().manual_seed(3))[..., 0]
    assert samples.shape == (2, 2000)
    for row, centre in zip(samples, query[:, 0].tolist(), strict=True):
        offset = row - centre
        upper, lower = (offset - 2.0).abs() < 0.9, (offset + 2.0).abs() < 0.9
        assert 0.3 < float(upper.float().mean()) < 0.7
        assert 0.3 < float(lower.float().mean()) < 0.7
        assert float((offset.abs() < 1.0).float().mean()) < 0.05  # little mass between the modes
        assert float(row[upper].mean()) == pytest.approx(centre + 2.0, abs=0.2)
        assert float(row[lower].mean()) == pytest.approx(centre - 2.0, abs=0.2)
        assert 0.2 < float(row[upper].std()) < 0.45  # and each mode has about the right width (0.3)


def test_several_noise_draws_score_each_row_as_if_it_were_repeated() -> None:
    torch.manual_seed(0)
    head = DiffusionHead(dim=1, cond_dim=3, num_steps=10, width=16, n_layers=2)
    x0, cond = torch.randn(5, 1), torch.randn(5, 3)
    drawn = head.loss(x0, cond, generator=torch.Generator().manual_seed(7), draws=4)
    repeated = head.loss(x0.repeat_interleave(4, dim=0), cond.repeat_interleave(4, dim=0),
                         generator=torch.Generator().manual_seed(7))
    assert torch.allclose(drawn, repeated)
    single = head.loss(x0, cond, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(drawn, single)  # more (t, noise) draws, not the same one again
