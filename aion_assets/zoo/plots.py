"""The zoo group's figures as PNG bytes for the asset pages. Pure: numpy, polars, matplotlib (Agg, no pyplot)."""

from __future__ import annotations

import numpy as np
import polars as pl

from aion_assets.platform.plots import figure_png, message_png, new_figure


def scaling_png(table: pl.DataFrame) -> bytes:
    """Test loss against training images on log-log axes: every run as a point, each size's fitted law as a
    line, alpha and its interval in the legend."""
    if table.is_empty():
        return message_png("no scaling runs yet")
    fig = new_figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for index, ((model,), rows) in enumerate(table.sort("params").group_by("model", maintain_order=True)):
        colour = f"C{index}"
        ax.scatter(rows["n_train"], rows["test_loss"], s=14, color=colour, alpha=0.7)
        fit = rows.row(0, named=True)
        label = f"{model} ({fit['params']:,} params)"
        if fit["alpha"] is not None:
            n = np.geomspace(rows["n_train"].min(), rows["n_train"].max(), 50)
            ax.plot(n, fit["a"] * n ** -fit["alpha"] + fit["c"], color=colour, lw=1.2)
            interval = (f" [{fit['alpha_lo']:.2f}, {fit['alpha_hi']:.2f}]"
                        if fit["alpha_lo"] is not None and np.isfinite(fit["alpha_lo"]) else "")
            label += f": alpha {fit['alpha']:.2f}{interval}"
        ax.plot([], [], color=colour, marker="o", lw=1.2, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images (gz1-sdss train split)", fontsize=8)
    ax.set_ylabel("test cross-entropy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def transfer_png(summary: pl.DataFrame) -> bytes:
    """One panel per task: the error of each encoder x method with its interval."""
    if summary.is_empty():
        return message_png("no transfer results")
    tasks = summary["task"].unique(maintain_order=True).to_list()
    fig = new_figure(2.6 * len(tasks), 3.2)
    for index, task in enumerate(tasks, start=1):
        ax = fig.add_subplot(1, len(tasks), index)
        rows = summary.filter(pl.col("task") == task).sort("method", "encoder")
        labels = [f"{r['encoder']}\n{r['method']}" for r in rows.iter_rows(named=True)]
        values = rows["value"].to_numpy()
        lo = np.nan_to_num(values - rows["value_lo"].fill_null(np.nan).to_numpy(), nan=0.0)
        hi = np.nan_to_num(rows["value_hi"].fill_null(np.nan).to_numpy() - values, nan=0.0)
        colours = ["tab:orange" if r["encoder"] == "imagenet" else "tab:blue" for r in rows.iter_rows(named=True)]
        ax.bar(range(len(values)), values, yerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)], color=colours,
               capsize=3)
        ax.set_xticks(range(len(values)), labels, fontsize=5, rotation=60)
        ax.set_title(f"{task} ({rows['metric'][0]})", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return figure_png(fig)
