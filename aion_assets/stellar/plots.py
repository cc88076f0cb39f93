"""The stellar group's figures, as PNG bytes for the asset pages. Pure: numpy and matplotlib (Agg, no pyplot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from aion_assets.platform.plots import figure_png, new_figure


def medians_vs_truth_png(panels: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """One panel per task: posterior median against the true value, with the one-to-one line."""
    fig = new_figure(3.2 * len(panels), 3.2)
    for index, (title, truth, median) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), index)
        ax.scatter(truth, median, s=3, alpha=0.4, color="tab:blue", linewidths=0)
        if len(truth):
            low, high = np.nanpercentile(np.concatenate([truth, median]), [0.5, 99.5])
            ax.plot([low, high], [low, high], color="black", lw=0.8)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("truth", fontsize=8)
        ax.set_ylabel("posterior median", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def calibration_png(levels: np.ndarray, observed: Mapping[str, np.ndarray]) -> bytes:
    """Observed against nominal coverage of central intervals; a calibrated model lies on the diagonal."""
    fig = new_figure(4.2, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, label="calibrated")
    for label, coverage in observed.items():
        ax.plot(levels, coverage, marker="o", ms=3, lw=1.2, label=label)
    ax.set_xlabel("nominal coverage of the central interval", fontsize=8)
    ax.set_ylabel("observed coverage", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def pit_png(histograms: Mapping[str, np.ndarray]) -> bytes:
    """PIT histograms per task (flat when calibrated; U-shaped when overconfident, humped when underconfident)."""
    fig = new_figure(3.0 * len(histograms), 2.6)
    for index, (title, counts) in enumerate(histograms.items(), start=1):
        ax = fig.add_subplot(1, len(histograms), index)
        edges = np.linspace(0, 1, len(counts) + 1)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
        ax.axhline(np.sum(counts) / max(len(counts), 1), color="black", lw=0.8)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("PIT", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def bimodal_posterior_png(samples: np.ndarray, gaussian_mean: float, gaussian_std: float, truth: float,
                          title: str, xlabel: str) -> bytes:
    """One star's emulator posterior (histogram of samples) against the Gaussian baseline's density."""
    fig = new_figure(4.6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(samples, bins=40, density=True, color="tab:blue", alpha=0.6, label="emulator (diffusion) samples")
    grid = np.linspace(min(samples.min(), gaussian_mean - 4 * gaussian_std),
                       max(samples.max(), gaussian_mean + 4 * gaussian_std), 300)
    density = np.exp(-0.5 * ((grid - gaussian_mean) / gaussian_std) ** 2) / (gaussian_std * np.sqrt(2 * np.pi))
    ax.plot(grid, density, color="tab:orange", lw=1.5, label="Gaussian baseline")
    ax.axvline(truth, color="black", lw=1, ls="--", label="truth")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def training_curves_png(curves: Sequence[Mapping[str, float]]) -> bytes:
    """Train and validation denoising loss against the step."""
    fig = new_figure(4.6, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    steps = [row["step"] for row in curves]
    ax.plot(steps, [row["train_loss"] for row in curves], label="train")
    ax.plot(steps, [row["validation_loss"] for row in curves], label="validation")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("noise-prediction MSE", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)
