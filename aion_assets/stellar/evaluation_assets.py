"""`stellar_eval` and its checks: the emulator against the boosted and Gaussian baselines on identical stars."""


import dagster as dg
import numpy as np
import polars as pl

from aion_assets.platform.layout import stellar_samples_path
from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, WarehouseResource
from aion_assets.stellar.assets import EVAL_CODE_VERSION, GROUP, stellar_posteriors
from aion_assets.stellar.resources import StellarEvalConfig

RED_CLUMP_VARIANT = "red_clump"
CALIBRATION_LEVELS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.8, 0.9, 0.95, 0.99])
COVERAGE_CONFIDENCE = 0.999  # per interval: many are checked at once, and a calibrated model must pass them all
# Stated test: where the data are bimodal, at least this fraction of the posteriors must be bimodal too.
MIN_BIMODAL_FRACTION = 0.5


def _spreads(rows: list[dict], task, inputs, test, samples, pool: pl.DataFrame, config: StellarEvalConfig) -> None:
    """Fill ``spread`` on a small task's rows: bootstrap for the emulator, re-drawn splits for the baselines."""
    from aion_assets.stellar.evaluation import EMULATOR, bootstrap_spread, repeated_split_spread

    spread = repeated_split_spread(pool, task, inputs, config.repeated_splits, config.seed, config.gaussian_epochs)
    spread[EMULATOR] = bootstrap_spread(samples, test[task.target].to_numpy(), config.bootstrap, config.seed)
    for row in rows:
        row["spread"] = spread.get(row["method"], {}).get(row["metric"])


@dg.asset(group_name=GROUP, deps=[stellar_posteriors], code_version=EVAL_CODE_VERSION, kinds={"duckdb"})
def stellar_eval(context: dg.AssetExecutionContext, config: StellarEvalConfig, lake: LakeResource,
                 warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Robust scatter, bias, 68/95% coverage and CRPS of the emulator, a gradient-boosted regressor and a
    Gaussian-output network per task and variant on the same test stars (`stellar_eval`), the red-clump
    bimodality test, and the plots: medians against truth, calibration, PIT, one bimodal posterior."""
    from aion_assets.stellar.artifacts import resolve_version
    from aion_assets.stellar.evaluation import evaluate_variant, red_clump_bimodality
    from aion_assets.stellar.tasks import ALL_INPUTS, TASKS, task_table

    store, wh = lake.get(), warehouse.get()
    model_version = resolve_version(store, None)
    posteriors = wh.query("SELECT * FROM stellar_posteriors WHERE model_version = ? ORDER BY task, variant, row",
                          [model_version])
    measurements = wh.query("SELECT star_id, source, name, value, z, split FROM stellar_catalog")
    rows: list[dict] = []
    figures = _Figures()
    for task in TASKS:
        tables = {split: task_table(measurements, task, split) for split in ("train", "validation", "test")}
        for variant, inputs in task.variants():
            asked = posteriors.filter((pl.col("task") == task.name) & (pl.col("variant") == variant))
            if asked.height == 0:
                continue
            samples = store.read_array(*stellar_samples_path(model_version, task.name, variant)).astype(np.float64)
            test = asked.select("star_id").join(tables["test"], on="star_id", how="left", maintain_order="left")
            variant_rows, baselines = evaluate_variant(task, variant, inputs, test, samples, tables["train"],
                                                       tables["validation"], config.seed, config.gaussian_epochs)
            if tables["test"].height < config.spread_below_n:  # the task's own size, not the subset asked
                _spreads(variant_rows, task, inputs, test, samples, pl.concat(tables.values()), config)
            rows += variant_rows
            if variant != ALL_INPUTS:
                continue
            figures.add_task(task, test[task.target].to_numpy(), samples)
            if task.target == "logg" and {"teff", "m_h"} <= set(inputs):
                result = red_clump_bimodality(test, samples, tables["train"], baselines, config.seed)
                rows += _red_clump_rows(task.name, result)
                figures.add_bimodal(task, test, samples, baselines, result)
        context.log.info(f"{task.name}: scored")
    frame = pl.DataFrame(rows, schema_overrides={"spread": pl.Float64}).with_columns(
        pl.lit(model_version).alias("model_version"))
    wh.replace_rows("stellar_eval", frame, where="model_version = ?", params=[model_version])
    return dg.MaterializeResult(metadata={"model_version": model_version, "rows": frame.height,
                                          "figures": dg.MetadataValue.md(summary_markdown(frame)),
                                          **figures.metadata()})


def _red_clump_rows(task: str, result) -> list[dict]:
    base = {"task": task, "variant": RED_CLUMP_VARIANT, "n": result.n_data_bimodal, "spread": None}
    return [{**base, "method": "emulator", "metric": "bimodal_fraction", "value": result.emulator_bimodal},
            {**base, "method": "gaussian", "metric": "bimodal_fraction", "value": result.gaussian_bimodal},
            {**base, "method": "emulator", "metric": "region_stars", "value": float(result.n_region)}]


class _Figures:
    """What the plots need, gathered task by task."""

    def __init__(self) -> None:
        self.panels, self.calibration, self.pit, self.bimodal = [], {}, {}, None

    def add_task(self, task, truth: np.ndarray, samples: np.ndarray) -> None:
        from aion_assets.stellar import scoring

        self.panels.append((task.description, truth, np.median(samples, axis=1)))
        self.calibration[task.name] = scoring.calibration_curve(samples, truth, CALIBRATION_LEVELS)
        self.pit[task.name] = scoring.pit_histogram(scoring.pit(samples, truth))

    def add_bimodal(self, task, test: pl.DataFrame, samples, baselines, result) -> None:
        from aion_assets.stellar.plots import bimodal_posterior_png

        row = result.example
        if row is None:
            return
        title = (f"logg of {test['star_id'][row]} (Teff {test['teff'][row]:.0f} K, [M/H] {test['m_h'][row]:+.2f}): "
                 f"{result.emulator_bimodal:.0%} of {result.n_data_bimodal} red-clump stars bimodal")
        self.bimodal = bimodal_posterior_png(samples[row], float(baselines.gaussian_mean[row]),
                                             float(baselines.gaussian_std[row]), float(test["logg"][row]), title,
                                             "logg")

    def metadata(self) -> dict:
        from aion_assets.stellar.plots import calibration_png, medians_vs_truth_png, pit_png

        out = {}
        if self.panels:
            out["medians_vs_truth"] = dg.MetadataValue.md(png_markdown(medians_vs_truth_png(self.panels),
                                                                       "posterior median against truth"))
            out["calibration"] = dg.MetadataValue.md(png_markdown(
                calibration_png(CALIBRATION_LEVELS, self.calibration), "calibration curve"))
            out["pit"] = dg.MetadataValue.md(png_markdown(pit_png(self.pit), "PIT histograms"))
        if self.bimodal is not None:
            out["bimodal_posterior"] = dg.MetadataValue.md(png_markdown(self.bimodal, "the red-clump posterior closest to two modes"))
        return out


def summary_markdown(frame: pl.DataFrame) -> str:
    """The all-inputs figures of each task: one line per task and method."""
    from aion_assets.stellar.tasks import ALL_INPUTS

    metrics = ["mad_std", "bias", "coverage_68", "coverage_95", "crps"]
    wide = (frame.filter((pl.col("variant") == ALL_INPUTS) & pl.col("metric").is_in(metrics))
            .pivot(on="metric", index=["task", "method", "n"], values="value").sort("task", "method"))
    shown = wide.select("task", "method", "n", *[pl.col(m).map_elements(lambda v: f"{v:.4g}", return_dtype=pl.String)
                                                 for m in metrics if m in wide.columns])
    return markdown_table(shown, max_rows=shown.height)


def _latest_eval(warehouse: WarehouseResource) -> pl.DataFrame:
    return warehouse.get().query("SELECT * FROM stellar_eval WHERE model_version = "
                                 "(SELECT max(model_version) FROM stellar_eval)")


@dg.asset_check(asset=stellar_eval, description="Every task's 68% and 95% coverage lies inside the 99.9% "
                "binomial interval of its nominal level for its number of test stars.")
def posterior_coverage_calibrated(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from aion_assets.stellar.scoring import coverage_interval

    frame = _latest_eval(warehouse).filter((pl.col("method") == "emulator")
                                           & pl.col("metric").is_in(["coverage_68", "coverage_95"]))
    failures = []
    for row in frame.iter_rows(named=True):
        level = 0.68 if row["metric"] == "coverage_68" else 0.95
        low, high = coverage_interval(int(row["n"]), level, COVERAGE_CONFIDENCE)
        if not low <= row["value"] <= high:
            failures.append(f"{row['task']}/{row['variant']}: {row['metric']} {row['value']:.3f} outside "
                            f"[{low:.3f}, {high:.3f}] (n={row['n']})")
    return dg.AssetCheckResult(passed=bool(frame.height) and not failures,
                               metadata={"checked": frame.height, "failures": len(failures),
                                         "failed": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures)
                                                                       or "none")})


@dg.asset_check(asset=stellar_eval, description="Where the red clump and the red giant branch overlap (Teff "
                "4850-5050 K) and the training stars' logg is bimodal, the emulator's logg posterior is bimodal "
                f"for at least {MIN_BIMODAL_FRACTION:.0%} of the test stars (2 Gaussians preferred by BIC, Ashman's "
                "D > 2); the Gaussian baseline cannot be.")
def red_clump_posterior_bimodal(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    frame = _latest_eval(warehouse).filter((pl.col("variant") == RED_CLUMP_VARIANT)
                                           & (pl.col("metric") == "bimodal_fraction"))
    values = {row["method"]: row for row in frame.iter_rows(named=True)}
    emulator = values.get("emulator")
    judged = int(emulator["n"]) if emulator else 0
    fraction = float(emulator["value"]) if emulator else 0.0
    return dg.AssetCheckResult(
        passed=judged > 0 and fraction >= MIN_BIMODAL_FRACTION,
        metadata={"stars_with_bimodal_data": judged, "emulator_bimodal_fraction": fraction,
                  "gaussian_bimodal_fraction": float(values["gaussian"]["value"]) if "gaussian" in values else 0.0},
    )
