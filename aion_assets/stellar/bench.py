"""Training steps/s and posterior samples/s of the stellar emulator (``aion bench stellar``). Pure: no dagster.

The catalogue is built from the tables in memory (nothing is written); a warm-up step and a warm-up draw run
before timing so allocator and thread-pool start-up are excluded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl


def bench_stellar(stellar_dir: Path, preset: str = "cpu", steps: int = 50, batch_size: int = 512,
                  n_stars: int = 256, n_samples: int = 256, device: str = "auto",
                  noise_draws: int = 8) -> dict[str, Any]:
    from aion_assets.platform.devices import resolve_device
    from aion_assets.stellar.catalog import NAMES, build_catalog
    from aion_assets.stellar.emulator import CPU_DEFAULT, REFERENCE, train_emulator
    from aion_assets.stellar.inference import sample_task, token_table
    from aion_assets.stellar.tasks import TASK_BY_NAME, task_table

    torch_device = resolve_device(device)
    catalog = build_catalog(stellar_dir)
    config = (CPU_DEFAULT if preset == "cpu" else REFERENCE).with_names(NAMES)
    rows = catalog.measurements
    train, _ = token_table(rows.filter(pl.col("split") == "train"), config.names)
    validation, _ = token_table(rows.filter(pl.col("split") == "validation").head(2000), config.names)
    train_emulator(train, validation, config, steps=1, batch_size=batch_size, lr=1e-3, seed=0,
                   device=str(torch_device), eval_every=1, noise_draws=noise_draws)  # warm-up
    started = time.perf_counter()
    model, _ = train_emulator(train, validation, config, steps=steps, batch_size=batch_size, lr=1e-3, seed=0,
                              device=str(torch_device), eval_every=steps, noise_draws=noise_draws)
    train_s = time.perf_counter() - started

    task = TASK_BY_NAME["logg_from_teff_mh"]
    table = task_table(rows, task, "test").head(n_stars)
    z_inputs = table.select([f"{name}__z" for name in task.inputs]).to_numpy()
    sample_task(model, task.inputs, z_inputs[:8], task.target, 8, seed=0, device=str(torch_device))  # warm-up
    started = time.perf_counter()
    sample_task(model, task.inputs, z_inputs, task.target, n_samples, seed=0, device=str(torch_device))
    sample_s = time.perf_counter() - started
    return {"preset": preset, "device": str(torch_device), "steps": steps, "batch_size": batch_size,
            "train_steps_per_s": steps / train_s, "train_stars_per_s": steps * batch_size / train_s,
            "stars": int(table.height), "samples_per_star": n_samples,
            "posterior_samples_per_s": table.height * n_samples / sample_s,
            "diffusion_steps": config.diffusion_steps, "parameters": int(sum(p.numel() for p in model.parameters()))}
