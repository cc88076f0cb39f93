"""Dagster wiring of the descriptions group: ``description_sample`` -> ``vlm_descriptions``.

Built by a factory from the describer resource the definitions use, so the code versions (describer kind, model,
prompt version + hash) are computed from the same config that runs: a new prompt or describer shows
``vlm_descriptions`` and everything downstream as changed in the UI.
"""


from collections import Counter

import dagster as dg

from aion_assets.platform.layout import CURRENT_DESCRIPTIONS
from aion_assets.platform.resources import LakeResource, WarehouseResource
from aion_assets.vlm.describers import DescribeRequest, RecordedDescriber, descriptions_content_hash
from aion_assets.vlm.resources import DescriberResource
from aion_assets.vlm.sample import SAMPLE_PATH, ShardImages, draw_sample
from aion_assets.vlm.store import WarehouseVlmStore


def build_vlm_assets(describer_config: DescriberResource) -> list[dg.AssetsDefinition]:
    label = describer_config.label()

    @dg.asset(
        group_name="descriptions",
        deps=[dg.AssetKey("raw_cutouts")],
        code_version=describer_config.sample_code_version(),
        description=("The cutouts to describe: a seeded random sample of the ingested cutouts, no curation by "
                     f"label (the recorded describer: its recorded set). Describer at load: {label}."),
        kinds={"parquet"},
    )
    def description_sample(context: dg.AssetExecutionContext, describer: DescriberResource,
                           lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        kind, why = describer.decision()
        context.log.info(f"describer: {kind} ({why})")
        cutouts = warehouse.get().read_lake_table("cutouts")
        if cutouts.is_empty():
            raise dg.Failure("no cutouts ingested yet: materialize raw_cutouts first")
        recorded = RecordedDescriber(describer.recorded_path or None).recorded_keys() if kind == "recorded" else None
        sample = draw_sample(cutouts, describer.sample_size, describer.seed, recorded)
        lake.get().write_parquet(sample, *SAMPLE_PATH)
        per_release = dict(sorted(Counter(sample["release"].to_list()).items()))
        return dg.MaterializeResult(metadata={
            "n": sample.height,
            "per_release": per_release,
            "seed": describer.seed if kind != "recorded" else "recorded set",
            "describer": f"{kind} ({why})",
            "path": "/".join(SAMPLE_PATH),
        })

    @dg.asset(
        group_name="descriptions",
        deps=[description_sample],
        pool="vlm_api",
        code_version=describer_config.code_version(),
        description=("Descriptions of the sampled cutouts by a vision-language model (DuckDB tables descriptions "
                     f"and description_failures). Describer at load: {label}."),
        kinds={"duckdb"},
    )
    def vlm_descriptions(context: dg.AssetExecutionContext, describer: DescriberResource,
                         lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        kind, why = describer.decision()
        context.log.info(f"describer: {kind} ({why})")
        the_lake, the_warehouse = lake.get(), warehouse.get()
        sample = the_lake.read_parquet(*SAMPLE_PATH)
        images = ShardImages(the_lake)
        requests = [
            DescribeRequest(r["release"], r["object_id"], r["sha256"],
                            images.loader(r["release"], r["shard"], r["row"]))
            for r in sample.iter_rows(named=True)
        ]
        engine = describer.build(store=WarehouseVlmStore(the_warehouse), log=context.log)
        outcome = engine.describe(requests)
        same_output = "describer = ? AND model = ? AND prompt_version = ?"
        params = [engine.name, engine.model, engine.prompt_version]
        the_warehouse.replace_rows("descriptions", outcome.rows, where=same_output, params=params)
        the_warehouse.replace_rows("description_failures", outcome.failures, where=same_output, params=params)
        # This run's rows, the exact input of text_embeddings: the table may hold several describers' answers.
        the_lake.write_parquet(outcome.rows, *CURRENT_DESCRIPTIONS)
        stats = outcome.stats
        content_hash = descriptions_content_hash(outcome.rows)
        failure_counts = dict(Counter(outcome.failures["status"].to_list())) if outcome.failures.height else {}
        context.log.info(f"{stats.successes} described, {stats.failures} failed, {stats.cache_hits} cache hits, "
                         f"${stats.cost_usd:.4f}")
        return dg.MaterializeResult(
            metadata={
                "describer": f"{kind} ({why})",
                "describer_name": engine.name,
                "model": engine.model,
                "prompt_version": engine.prompt_version,
                **stats.as_metadata(),
                "failure_statuses": failure_counts,
                "content_hash": content_hash,
                "rows": outcome.rows.height,
            },
            data_version=dg.DataVersion(content_hash[:16]),
        )

    return [description_sample, vlm_descriptions]
