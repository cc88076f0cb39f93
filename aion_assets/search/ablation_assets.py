"""`search_ablations`: every modelling choice of the search on and off, over seeds, on every pool, and the
leave-one-release-out figures of the served choices in `eval_results` (pool `leave_one_release_out`).

The science is in search/ablation.py; this module gathers its inputs from the lake and the warehouse (computing,
once, the image embeddings that only the ablation needs: another input size, the eight dihedral transforms) and
writes the results: the `search_ablations` table (mean, spread and count over replicates), the per-replicate rows
in the lake, an MLflow run with one tagged child run per held-out release.
"""

from dataclasses import replace
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from aion_assets.encoders.finetuned import encoder_trained_on
from aion_assets.encoders.image import (
    canonical_image_encoder,
    embed_array,
    embed_dihedral,
    iter_lake_cutouts,
    load_image_encoder,
)
from aion_assets.encoders.resources import ImageEncoderResource, TextEncoderResource
from aion_assets.encoders.text import sentence_embeddings
from aion_assets.platform.layout import (
    CURRENT_DESCRIPTIONS,
    encoder_artifact_id,
    image_base_embeddings_path,
    text_embeddings_dir,
)
from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.resources import LakeResource, MlflowResource, WarehouseResource
from aion_assets.search.ablation import (
    LORO_POOL,
    SERVED_CHOICES,
    AblationInputs,
    AblationPlan,
    SearchChoices,
    ablation_table,
    parse_variant,
    run_ablation,
    summarise,
)
from aion_assets.search.assets import cutout_rows, models_code_version, without_held_out
from aion_assets.search.targets import DEMO_QUERIES, TARGETS, targets_version
from aion_assets.search.training import TrainConfig
from aion_assets.search.vectors import gather_vectors, partitions_in_order

ABLATION_EXPERIMENT = "aion-search-ablations"
ABLATION_ROWS = ("evaluation", "ablations", "rows.parquet")
# Each choice the served one did not take, one at a time (search/ablation.py's SERVED_CHOICES).
DEFAULT_VARIANTS = [
    "text=views", "text=mean", "text=description", "ensemble=on", "demote_artefacts=off",
    "learn_temperature=off", "hubness=centre", "hubness=csls", "release_centring=on",
    "orientation=train", "orientation=mean", "encoder=efficientnet-lite0@224",
]


class SearchAblationConfig(dg.Config):
    """Which choices to try against the served ones (``field=value``, see search/ablation.py's SearchChoices;
    an empty list measures the served choices alone), over which seeds. ``encoder=zoo-lite0-v<N>`` compares
    the galaxy-pretrained encoder on pools less its training objects, beside the served choices on the same
    pools."""

    variants: list[str] = DEFAULT_VARIANTS
    seeds: list[int] = [0, 1, 2]
    leave_one_release_out: bool = True
    epochs: int = TrainConfig.epochs
    val_fraction: float = 0.15
    split_seed: int = 1234


def _embeddings(store, rows: pl.DataFrame, encoder_id: str, encode, log) -> np.ndarray:
    """Every cutout's embedding under ``encoder_id``, computing (once, into the lake) the partitions missing."""
    for key in partitions_in_order(rows):
        path = image_base_embeddings_path(encoder_id, key)
        if not store.exists(*path):
            log.info(f"embedding {key} for {encoder_id}")
            cutouts = next(iter_lake_cutouts(store, [key]))
            store.write_array(encode(cutouts), *path)
    return gather_vectors(store, rows, lambda key: image_base_embeddings_path(encoder_id, key))[1]


def _image_inputs(store, rows, choices: list[SearchChoices], served_spec: str, served_id: str, precision: str,
                  log) -> tuple[dict, dict]:
    images, dihedral = {}, {}
    for encoder in dict.fromkeys(c.encoder for c in choices):
        spec, _, size = encoder.partition("@")
        if encoder == served_spec:
            images[encoder] = gather_vectors(store, rows, lambda key: image_base_embeddings_path(served_id, key))[1]
            continue
        model = load_image_encoder(spec, image_size=int(size), lake=store) if size else load_image_encoder(
            spec, lake=store)
        encoder_id = encoder_artifact_id(f"{spec}-{size}px" if size else spec, precision)
        images[encoder] = _embeddings(store, rows, encoder_id, lambda c, m=model: embed_array(m, c), log)
    if any(c.orientation != "none" for c in choices):
        model = load_image_encoder(served_spec, lake=store)
        flat = _embeddings(store, rows, f"{served_id}-d8", lambda c: embed_dihedral(model, c).astype(np.float16)
                           .reshape(len(c), -1), log)
        dihedral[served_spec] = flat.reshape(len(flat), 8, -1)
    return images, dihedral


def _text_inputs(store, warehouse, text_id: str, rows: pl.DataFrame, sentences: bool, encode) -> tuple:
    folder = text_embeddings_dir(text_id)
    ids = store.read_parquet(*folder, "ids.parquet").with_row_index("text_row")
    texts = store.read_parquet(*CURRENT_DESCRIPTIONS).select("release", "object_id", "description", "summary")
    described = (ids.join(rows.with_row_index("object_row").select("release", "object_id", "sha256", "object_row"),
                          on=["release", "object_id"])
                 .join(texts, on=["release", "object_id"], how="left").sort("text_row"))
    described = without_held_out(store, described)
    text_rows = described["text_row"].to_numpy()
    arrays = {"description": store.read_array(*folder, "description.npy")[text_rows],
              "summary": store.read_array(*folder, "summary.npy")[text_rows]}
    if sentences:
        arrays["sentences"] = sentence_embeddings(described["description"].fill_null("").to_list(), encode)
    return described, arrays


def build_ablation_assets() -> list[dg.AssetsDefinition]:
    # It trains heads of its own (never reads alignment_model's), so it depends on what they are trained from.
    @dg.asset(group_name="evaluation", deps=["text_embeddings", "image_base_embeddings", "raw_cutouts",
                                             "zoo_dataset"],
              code_version=f"{models_code_version()}-targets-{targets_version()}", pool="duckdb_writer",
              kinds={"pytorch", "duckdb", "mlflow"})
    def search_ablations(context: dg.AssetExecutionContext, config: SearchAblationConfig, lake: LakeResource,
                         warehouse: WarehouseResource, mlflow: MlflowResource, text_encoder: TextEncoderResource,
                         image_encoder: ImageEncoderResource) -> dg.MaterializeResult:
        """Each modelling choice of the search on and off against the served choices, over several seeds, on
        every pool (release, survey and leave-one-release-out: heads trained without a release's descriptions,
        evaluated on it). Mean and spread in `search_ablations`; the served choices' leave-one-release-out
        figures in `eval_results`."""
        import mlflow as mlflow_api

        store, wh = lake.get(), warehouse.get()
        # the served choices with the configured encoder, whatever it is
        served = replace(SERVED_CHOICES, encoder=canonical_image_encoder(image_encoder.spec))
        try:
            variants = list(dict.fromkeys([served, *(parse_variant(v, served) for v in config.variants)]))
        except ValueError as error:
            raise dg.Failure(f"bad variant: {error}") from error
        rows = cutout_rows(warehouse)
        encoder = text_encoder.load()
        images, dihedral = _image_inputs(store, rows, variants, served.encoder, image_encoder.artifact_id,
                                         image_encoder.precision, context.log)
        described, texts = _text_inputs(store, wh, text_encoder.artifact_id, rows,
                                        any(v.text in ("chunks", "all") for v in variants), encoder.encode)
        inputs = AblationInputs(rows.select("release", "object_id", "sha256"), images, described, texts,
                                wh.query("SELECT release, object_id, name, value FROM labels"), encoder.encode,
                                dihedral=dihedral, probe_queries=DEMO_QUERIES)
        plan = AblationPlan(seeds=tuple(config.seeds), val_fraction=config.val_fraction,
                            split_seed=config.split_seed, loro=config.leave_one_release_out,
                            train=TrainConfig(epochs=config.epochs))
        frames, trained = [], {}
        for excluded_by, block in _blocks(variants, served):
            inputs.excluded = (encoder_trained_on(store, excluded_by) if excluded_by != "described" else None)
            frames.append(run_ablation(inputs, block, plan, baseline=served, progress=context.log.info,
                                       trained=trained)
                          .with_columns(pools_exclude=pl.lit(excluded_by)))
        replicates = pl.concat(frames)
        store.write_parquet(replicates, *ABLATION_ROWS)
        created = datetime.now(timezone.utc)
        summary = summarise(replicates).with_columns(run_id=pl.lit(context.run.run_id), created_at=pl.lit(created))
        wh.replace_tables({"search_ablations": summary})
        loro = _loro_figures(summary, created, served.encoder)
        if loro.height:
            wh.append("eval_results", loro)
        run_id = _log_to_mlflow(mlflow_api, mlflow, context, config, summary)
        table = ablation_table(summary.filter(pl.col("pools_exclude") == "described"))
        return dg.MaterializeResult(metadata={
            "variants": len(variants), "seeds": len(config.seeds), "rows": summary.height,
            "mlflow_run_id": run_id, "leave_one_release_out_rows": loro.height,
            "ndcg@10": dg.MetadataValue.md(markdown_table(table, max_rows=len(variants), max_chars=20)),
        })

    return [search_ablations]


def _blocks(variants: list[SearchChoices], served: SearchChoices) -> list[tuple[str, list[SearchChoices]]]:
    """Variants grouped by the pools they need: encoders trained on our objects get pools less those objects,
    with the served choices beside them on the same pools."""
    from aion_assets.encoders.finetuned import zoo_encoder_version

    plain = [v for v in variants if zoo_encoder_version(v.encoder) is None]
    blocks = [("described", plain)]
    for encoder in dict.fromkeys(v.encoder for v in variants if zoo_encoder_version(v.encoder) is not None):
        blocks.append((encoder, [served, *(v for v in variants if v.encoder == encoder)]))
    return blocks


def _loro_figures(summary: pl.DataFrame, created: datetime, encoder: str) -> pl.DataFrame:
    """The served choices' leave-one-release-out rows in `eval_results`' shape (mean over seeds; no registered
    model version: those heads are trained for the measurement and not kept)."""
    rows = summary.filter((pl.col("variant") == "baseline") & (pl.col("pool") == LORO_POOL)
                          & (pl.col("pools_exclude") == "described"))
    return rows.select(
        "target", "pool", "method", "metric", pl.col("mean").alias("value"), "n_relevant", "pool_size",
        pl.lit(None, dtype=pl.Int64).alias("model_version"), pl.lit(encoder).alias("image_encoder"),
        pl.lit("described").alias("excluded_by"), pl.lit(created).alias("created_at"))


def _log_to_mlflow(mlflow_api, mlflow: MlflowResource, context, config: SearchAblationConfig,
                   summary: pl.DataFrame) -> str:
    """One run for the ablation, and a child run per held-out release tagged with it."""
    experiment_id = mlflow.experiment(ABLATION_EXPERIMENT)
    text = summary.filter(pl.col("method") == "text_search")
    with mlflow_api.start_run(experiment_id=experiment_id, run_name=f"ablation-{context.run.run_id[:8]}") as run:
        mlflow_api.set_tags({"evaluation": "ablation", "dagster_run_id": context.run.run_id})
        mlflow_api.log_params({"seeds": ",".join(map(str, config.seeds)), "variants": ";".join(config.variants),
                               "epochs": config.epochs})
        mlflow_api.log_metrics({_metric_key(r): r["mean"] for r in text.filter(pl.col("pool") != LORO_POOL)
                                .iter_rows(named=True)})
        loro = text.filter(pl.col("pool") == LORO_POOL)
        release_of = {t.name: t.release for t in TARGETS}
        for release in sorted({release_of[t] for t in loro["target"].to_list()}):
            held = loro.filter(pl.col("target").is_in([t for t, r in release_of.items() if r == release]))
            with mlflow_api.start_run(experiment_id=experiment_id, run_name=f"loro-{release}", nested=True):
                mlflow_api.set_tags({"evaluation": LORO_POOL, "held_out_release": release,
                                     "dagster_run_id": context.run.run_id})
                mlflow_api.log_metrics({_metric_key(r): r["mean"] for r in held.iter_rows(named=True)})
        mlflow_api.log_text(summary.write_csv(), "search_ablations.csv")
        return run.info.run_id


def _metric_key(row: dict) -> str:
    variant = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in row["variant"])
    return f"{variant}/{row['pool']}/{row['target']}/{row['metric'].replace('@', '_at_')}"
