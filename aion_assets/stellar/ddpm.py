"""A small conditional denoising-diffusion (DDPM) head that samples a d-dimensional posterior given a condition.

Leung, Bovy & Speagle (2024, arXiv:2407.15703) put such a head on top of a Transformer so that one network returns
the full, possibly multi-modal, posterior of any stellar label instead of a point estimate with a Gaussian error
bar. This module is the head alone (Ho, Jain & Abbeel 2020, arXiv:2006.11239): it works for any dimension ``d``
and any condition vector, so it can be tested on toy densities without the Transformer. The layout follows the
reference implementation (henrysky/stars_foundation_diffusion, MIT, ``stellarperceptron/ddpm.py``): an MLP whose
every hidden layer adds a learned time-step embedding and a linear map of the condition to its pre-activation, a
sigmoid beta schedule between 1e-5 and 0.1 over 120 steps, the noise-prediction loss with antithetic time steps,
and ancestral sampling with sigma_t^2 = beta_t. The code here is our own.

Nothing here imports dagster: the stellar assets wrap these modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCHEDULES = ("sigmoid", "linear")


def make_betas(num_steps: int, beta_start: float = 1e-5, beta_end: float = 0.1,
               schedule: str = "sigmoid") -> torch.Tensor:
    """The T noise variances beta_1..beta_T (float64, for accurate cumulative products)."""
    if num_steps < 2:
        raise ValueError(f"a diffusion needs at least 2 steps, got {num_steps}")
    if not 0.0 < beta_start < beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start} and {beta_end}")
    if schedule == "sigmoid":
        # as the reference: sigmoid(-6..6) mapped affinely onto [beta_start, beta_end]; the end points sit within
        # 0.25% of the range of the nominal values because sigmoid(+-6) is 0.0025 from 0 and 1
        ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, num_steps, dtype=torch.float64))
        return ramp * (beta_end - beta_start) + beta_start
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


class NoiseSchedule(nn.Module):
    """Betas, alphas and their cumulative products for a T-step diffusion, as (non-persistent) buffers.

    Why sigmoid: with only ~100 steps (sampling cost is linear in T, and the head is run for every posterior
    sample), a linear schedule spends many steps at large beta where the sample is already noise, while the sigmoid
    schedule stays near beta_start for the first steps (fine detail of a narrow posterior is resolved there) and
    near beta_end for the last ones, ramping in between. With T=120 and beta_end=0.1, alpha_bar_T ~ 2e-3, so x_T
    is pure noise to within sqrt(alpha_bar_T) ~ 0.05 of the (standardised) data scale. The buffers are derived from
    the config alone and kept out of the state dict; they follow the module across ``.to(device)``.
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor

    def __init__(self, num_steps: int = 120, beta_start: float = 1e-5, beta_end: float = 0.1,
                 schedule: str = "sigmoid") -> None:
        super().__init__()
        self.num_steps, self.beta_start, self.beta_end, self.schedule = num_steps, beta_start, beta_end, schedule
        betas = make_betas(num_steps, beta_start, beta_end, schedule)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        for name, value in (("betas", betas), ("alphas", alphas), ("alphas_cumprod", alphas_cumprod),
                            ("sqrt_alphas_cumprod", alphas_cumprod.sqrt()),
                            ("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())):
            self.register_buffer(name, value.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"T={self.num_steps}, {self.schedule} betas in [{self.beta_start:g}, {self.beta_end:g}]"


class ConditionalDenoiser(nn.Module):
    """An MLP predicting the noise eps from (x_t, t, cond).

    Hidden layer i computes GELU(W_i h + E_i[t] + C_i cond): a learned embedding of the time step and a linear map
    of the condition are added to every pre-activation (as the reference's ConditionalLinear), so the condition
    can steer every layer rather than only the input. ``cond_dim=0`` gives an unconditional denoiser.
    """

    def __init__(self, dim: int, cond_dim: int = 0, num_steps: int = 120, width: int = 128, n_layers: int = 3) -> None:
        super().__init__()
        if min(dim, width, n_layers, num_steps) < 1 or cond_dim < 0:
            raise ValueError(f"bad denoiser shape: dim={dim} cond={cond_dim} width={width} layers={n_layers}")
        self.dim, self.cond_dim, self.width = dim, cond_dim, width
        self.layers = nn.ModuleList(nn.Linear(dim if i == 0 else width, width) for i in range(n_layers))
        self.time_embeddings = nn.ModuleList(nn.Embedding(num_steps, width) for _ in range(n_layers))
        for embedding in self.time_embeddings:
            nn.init.uniform_(embedding.weight)  # the reference's choice: small positive offsets per step
        self.cond_maps = nn.ModuleList(nn.Linear(cond_dim, width) for _ in range(n_layers)) if cond_dim else None
        self.output = nn.Linear(width, dim)

    def condition(self, cond: torch.Tensor | None) -> list[torch.Tensor] | None:
        """Each layer's condition term C_i cond, [B, width]; computed once and reused across the T sampling steps."""
        if self.cond_maps is None:
            return None
        if cond is None or cond.shape[-1] != self.cond_dim:
            raise ValueError(f"this denoiser needs a condition of width {self.cond_dim}")
        return [cond_map(cond) for cond_map in self.cond_maps]

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond_terms: list[torch.Tensor] | None) -> torch.Tensor:
        """Predicted noise for x [N, d] at steps t ([N] or a scalar shared by all rows), given precomputed terms."""
        h = x
        for i, (layer, time_embedding) in enumerate(zip(self.layers, self.time_embeddings, strict=True)):
            pre = layer(h) + time_embedding(t)
            if cond_terms is not None:
                pre = pre + cond_terms[i]
            h = F.gelu(pre)
        return self.output(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoise(x, t, self.condition(cond))


class DiffusionHead(nn.Module):
    """Noise schedule + denoiser: the training loss and a vectorised ancestral sampler for p(x | cond)."""

    def __init__(self, dim: int, cond_dim: int = 0, num_steps: int = 120, width: int = 128, n_layers: int = 3,
                 beta_start: float = 1e-5, beta_end: float = 0.1, schedule: str = "sigmoid") -> None:
        super().__init__()
        self.dim, self.cond_dim, self.num_steps = dim, cond_dim, num_steps
        self.schedule = NoiseSchedule(num_steps, beta_start, beta_end, schedule)
        self.denoiser = ConditionalDenoiser(dim, cond_dim, num_steps, width, n_layers)

    def _check(self, x: torch.Tensor | None, cond: torch.Tensor | None) -> None:
        if x is not None and (x.ndim != 2 or x.shape[1] != self.dim):
            raise ValueError(f"expected x of shape [B, {self.dim}], got {tuple(x.shape)}")
        if self.cond_dim and (cond is None or cond.ndim != 2 or cond.shape[1] != self.cond_dim):
            shape = None if cond is None else tuple(cond.shape)
            raise ValueError(f"expected a condition of shape [B, {self.cond_dim}], got {shape}")

    def loss(self, x0: torch.Tensor, cond: torch.Tensor | None = None,
             generator: torch.Generator | None = None, draws: int = 1) -> torch.Tensor:
        """Mean squared error between the true and the predicted noise at uniformly drawn steps t.

        Steps come in antithetic pairs (t, T-1-t), as in the reference: every batch covers both ends of the
        schedule evenly, which lowers the variance of the loss at no cost. ``draws`` > 1 scores each row at that
        many (t, noise) draws: the head is cheap next to whatever computed ``cond``, so one encoder pass buys
        several denoising targets and a much less noisy gradient.
        """
        self._check(x0, cond)
        if draws > 1:
            x0 = x0.repeat_interleave(draws, dim=0)
            cond = None if cond is None else cond.repeat_interleave(draws, dim=0)
        batch = x0.shape[0]
        half = torch.randint(0, self.num_steps, (batch // 2 + 1,), generator=generator, device=x0.device)
        t = torch.cat([half, self.num_steps - 1 - half])[:batch]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = (self.schedule.sqrt_alphas_cumprod[t, None] * x0
               + self.schedule.sqrt_one_minus_alphas_cumprod[t, None] * noise)
        return F.mse_loss(self.denoiser(x_t, t, cond), noise)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor | None, n_samples: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n_samples`` draws from p(x | cond) per condition row: [B, n_samples, d].

        All B x n_samples chains advance together, one denoiser call per step. The condition terms are computed
        once for the B rows and repeated, since they do not depend on t. ``cond=None`` (unconditional head) gives
        B=1. Noise comes from ``generator`` so a fixed seed gives identical samples.
        """
        if cond is None:
            if self.cond_dim:
                raise ValueError(f"this head needs a condition of width {self.cond_dim}")
            device, batch, terms = self.schedule.betas.device, 1, None
        else:
            self._check(None, cond)
            device, batch = cond.device, cond.shape[0]
            terms = self.denoiser.condition(cond)
        if terms is not None:
            terms = [term.repeat_interleave(n_samples, dim=0) for term in terms]
        s = self.schedule
        x = torch.randn((batch * n_samples, self.dim), generator=generator, device=device)
        for step in range(self.num_steps - 1, -1, -1):
            t = torch.tensor(step, device=device)
            eps = self.denoiser.denoise(x, t, terms)
            x = (x - s.betas[step] / s.sqrt_one_minus_alphas_cumprod[step] * eps) / s.alphas[step].sqrt()
            if step > 0:  # Ho et al.: no noise on the last step, which returns the mean of p(x_0 | x_1)
                x = x + s.betas[step].sqrt() * torch.randn(x.shape, generator=generator, device=device)
        return x.view(batch, n_samples, self.dim)
