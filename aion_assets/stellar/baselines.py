"""The two baselines the stellar label emulator is compared to, trained on the same splits as it is.

- Boosted trees (:func:`fit_boosted`): the strongest cheap point estimator for a few tabular inputs. It gives no
  uncertainty, so it is scored on accuracy and on the CRPS of a point forecast (the absolute error).
- A heteroscedastic Gaussian network (:func:`fit_gaussian_network`): an MLP giving a mean and a variance per star,
  trained on the Gaussian negative log-likelihood. It is what "a posterior" means without the emulator's machinery;
  if the emulator's samples do not beat its CRPS and coverage, the diffusion head earns nothing. It cannot be
  bimodal, which is the point of the logg comparison near the red clump.

Both take dense feature matrices [n, d] and a target [n] in whatever units the caller chose, fit on the train split
and stop early on the validation split (never the test split). NaN marks a missing input: the trees route it
natively; the network imputes it (see :class:`GaussianNetwork`). Targets must be finite: a star without a label is
not a training example. Thread counts are the caller's business; these models are too small to gain from more
than one thread, and on shared cores two threads were several times slower (20k rows x 4 features, 2 busy cores:
the network 15 s with ``torch.set_num_threads(1)`` against ~60 s with 2; the trees 0.4 s under
``threadpoolctl.threadpool_limits(1)``, up to ~30 s with 2 OpenMP threads).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from torch import nn

# log-variance bounds in standardised target units: exp(-14) ~ (1e-3 of the target's spread)^2 at the low end;
# without them one near-exact training star can drive a variance to zero and its NLL to -inf
LOG_VAR_MIN, LOG_VAR_MAX = -14.0, 6.0


def _features(x: np.ndarray, n_features: int | None = None) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {array.shape[1]}")
    if np.isinf(array).any():
        raise ValueError("features contain inf (NaN marks a missing input; inf is an error)")
    return array


def _target(y: np.ndarray, n_rows: int) -> np.ndarray:
    array = np.asarray(y, dtype=np.float64).ravel()
    if len(array) != n_rows:
        raise ValueError(f"{n_rows} feature rows but {len(array)} targets")
    if not np.isfinite(array).all():
        raise ValueError("targets contain NaN or inf: drop unlabelled stars before fitting")
    return array


@dataclass
class BoostedPredictor:
    """A fitted HistGradientBoostingRegressor; ``n_iter`` is the number of trees early stopping kept."""

    model: HistGradientBoostingRegressor
    n_features: int

    @property
    def n_iter(self) -> int:
        return int(self.model.n_iter_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Point estimates [n]."""
        return self.model.predict(_features(x, self.n_features)).astype(np.float64)


def fit_boosted(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int = 0,
                learning_rate: float = 0.1, max_iter: int = 1000, max_leaf_nodes: int = 31,
                min_samples_leaf: int = 20, n_iter_no_change: int = 20) -> BoostedPredictor:
    """Squared-error gradient boosting, early-stopped on the validation split's loss.

    The validation split is passed as such (``X_val``) rather than carved out of the training rows, so the trees
    see exactly the training split the other methods see. NaN inputs need no imputation: each split learns which
    side missing values go to.
    """
    x_train = _features(x_train)
    x_val = _features(x_val, x_train.shape[1])
    model = HistGradientBoostingRegressor(learning_rate=learning_rate, max_iter=max_iter,
                                          max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min_samples_leaf,
                                          early_stopping=True, n_iter_no_change=n_iter_no_change,
                                          random_state=seed)
    model.fit(x_train, _target(y_train, len(x_train)), X_val=x_val, y_val=_target(y_val, len(x_val)))
    return BoostedPredictor(model=model, n_features=x_train.shape[1])


class _MeanLogVarMLP(nn.Module):
    def __init__(self, n_inputs: int, hidden: int, n_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(x))
        return out[:, 0], out[:, 1].clamp(LOG_VAR_MIN, LOG_VAR_MAX)


def _gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # 1/2 [log sigma^2 + (y - mu)^2 / sigma^2], without the constant 1/2 log(2 pi)
    return 0.5 * (log_var + (y - mean) ** 2 * torch.exp(-log_var)).mean()


class GaussianNetwork:
    """A fitted heteroscedastic MLP: y | x ~ N(mean(x), std(x)^2), in the target's own units.

    Inputs are standardised with the training split's mean and std, the target likewise (the network works in
    O(1) units whatever the label; :meth:`predict` undoes it). A missing input is set to the training median and
    flagged in an extra 0/1 column, one per feature that had missing values in the training split: median
    imputation alone would present a star without that input as a typical star and the network would be as
    confident about it as about a fully measured one; the flag lets it learn a wider variance (and a shifted mean)
    when an input is absent. A feature never missing in training gets no flag, so a NaN there at prediction time
    is imputed blindly; that is extrapolation the training data cannot support.
    """

    def __init__(self, module: _MeanLogVarMLP, x_centre: np.ndarray, x_scale: np.ndarray, x_median: np.ndarray,
                 flagged: np.ndarray, y_centre: float, y_scale: float) -> None:
        self.module = module
        self.x_centre, self.x_scale, self.x_median = x_centre, x_scale, x_median
        self.flagged = flagged  # indices of the features that get a missing-indicator column
        self.y_centre, self.y_scale = y_centre, y_scale
        self.best_epoch = 0
        self.best_val_nll = math.inf  # in standardised target units, without the 1/2 log(2 pi)

    @property
    def n_features(self) -> int:
        return len(self.x_centre)

    def encode(self, x: np.ndarray) -> torch.Tensor:
        """The network's input: standardised features with missing ones imputed, then the missing flags."""
        x = _features(x, self.n_features)
        missing = np.isnan(x)
        filled = np.where(missing, self.x_median, x)
        standard = (filled - self.x_centre) / self.x_scale
        return torch.from_numpy(np.hstack([standard, missing[:, self.flagged]]).astype(np.float32))

    def _standard_outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.module.eval()
        with torch.no_grad():
            mean, log_var = self.module(self.encode(x))
        return mean.double().numpy(), log_var.double().numpy()

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean [n], std [n]) of the predictive Gaussian in target units."""
        mean, log_var = self._standard_outputs(x)
        return mean * self.y_scale + self.y_centre, np.exp(0.5 * log_var) * self.y_scale

    def sample(self, x: np.ndarray, n_samples: int, seed: int = 0) -> np.ndarray:
        """[n, n_samples] draws from each star's predictive Gaussian, for the sample-based scores."""
        mean, std = self.predict(x)
        noise = np.random.default_rng(seed).standard_normal((len(mean), n_samples))
        return mean[:, None] + std[:, None] * noise


def _standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        centre, scale, median = np.nanmean(x_train, 0), np.nanstd(x_train, 0), np.nanmedian(x_train, 0)
    # a feature missing everywhere, or constant, carries nothing: centre it at 0 and leave its scale alone
    empty = np.isnan(centre)
    centre[empty], median[empty] = 0.0, 0.0
    scale[empty | ~(scale > 0)] = 1.0
    return centre, scale, median


def fit_gaussian_network(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                         seed: int = 0, hidden: int = 128, n_layers: int = 2, epochs: int = 300,
                         batch_size: int = 1024, learning_rate: float = 3e-3, weight_decay: float = 1e-4,
                         patience: int = 20) -> GaussianNetwork:
    """Train a :class:`GaussianNetwork` with AdamW on the Gaussian NLL, keeping the epoch with the best validation
    NLL and stopping ``patience`` epochs after it. Deterministic for a seed (initialisation and shuffling draw
    from their own seeded generators; the global torch RNG is left as it was)."""
    x_train = _features(x_train)
    x_val = _features(x_val, x_train.shape[1])
    y_train, y_val = _target(y_train, len(x_train)), _target(y_val, len(x_val))
    centre, scale, median = _standardisation(x_train)
    flagged = np.flatnonzero(np.isnan(x_train).any(axis=0))
    y_centre, y_scale = float(np.mean(y_train)), float(np.std(y_train)) or 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _MeanLogVarMLP(x_train.shape[1] + len(flagged), hidden, n_layers)
    network = GaussianNetwork(module, centre, scale, median, flagged, y_centre, y_scale)

    inputs, val_inputs = network.encode(x_train), network.encode(x_val)
    targets = torch.from_numpy(((y_train - y_centre) / y_scale).astype(np.float32))
    val_targets = torch.from_numpy(((y_val - y_centre) / y_scale).astype(np.float32))
    optimiser = torch.optim.AdamW(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    best_state, best_nll, best_epoch = copy.deepcopy(module.state_dict()), math.inf, 0
    for epoch in range(epochs):
        module.train()
        for rows in torch.randperm(len(inputs), generator=shuffle).split(batch_size):
            optimiser.zero_grad()
            _gaussian_nll(*module(inputs[rows]), targets[rows]).backward()
            optimiser.step()
        module.eval()
        with torch.no_grad():
            val_nll = float(_gaussian_nll(*module(val_inputs), val_targets))
        if val_nll < best_nll:
            best_state, best_nll, best_epoch = copy.deepcopy(module.state_dict()), val_nll, epoch
        elif epoch - best_epoch >= patience:
            break
    module.load_state_dict(best_state)
    network.best_epoch, network.best_val_nll = best_epoch, best_nll
    return network
