"""`raw_cutouts`: one release shard per partition, validated and written to the lake. Thin Dagster wiring."""

import time

import dagster as dg

from aion_assets.cutouts.ingest import (
    ShardResult,
    clear_release_rejection,
    ingest_shard,
    quarantine_summary_markdown,
    record_release_rejection,
    write_shard,
)
from aion_assets.cutouts.releases import ReleaseError, env_shard_size, find_release_dir, load_release, shard_keys
from aion_assets.platform.layout import ShardKey
from aion_assets.platform.partitions import release_shards
from aion_assets.platform.plots import png_markdown
from aion_assets.platform.resources import LakeResource, ReleasesResource, WarehouseResource


@dg.asset(
    group_name="cutouts",
    partitions_def=release_shards,
    kinds={"numpy", "parquet"},
    description=(
        "Canonical cutouts of one release shard: every catalog row validated (decodes, bands, finite values, path "
        "inside the release), written as uint8 RGB 160x160 (+ float32 flux bands when the source has them) to "
        "lake/cutouts/<release>/<shard>/, with rows in the lake tables `cutouts`, `labels` and `quarantine`."
    ),
)
def raw_cutouts(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    releases: ReleasesResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    key = ShardKey.parse(context.partition_key)
    release_name, shard = key.release, key.shard
    store = warehouse.get()
    shard_size = env_shard_size()
    try:
        folder = find_release_dir(releases.root(), release_name)
        release = load_release(folder, shard_size)
    except ReleaseError as error:
        # A release that vanished or broke since its partitions were added: say so, record it, touch nothing else.
        if releases.root() is not None and (releases.root() / release_name).is_dir():
            record_release_rejection(store, release_name, "manifest.json / catalog", error.reason)
        raise dg.Failure(
            description=f"cannot ingest {context.partition_key}: {error}",
            metadata={"release": release_name, "reason": error.reason},
        ) from error
    if context.partition_key not in shard_keys(release.name, release.n_objects, shard_size):
        raise dg.Failure(
            description=(f"{context.partition_key} is beyond the release's {release.n_objects} objects at "
                         f"{shard_size} per shard (AION_SHARD_SIZE): the catalog shrank or the shard size changed"),
        )
    clear_release_rejection(store, release.name)
    context.log.info(f"ingesting {context.partition_key}: {release.n_objects} objects in the release, "
                     f"shard size {shard_size}")
    try:
        result = ingest_shard(folder, release, int(shard), shard_size)
    except ReleaseError as error:
        record_release_rejection(store, release_name, release.catalog_file, error.reason)
        raise dg.Failure(description=f"cannot ingest {context.partition_key}: {error}") from error
    written = write_shard(lake.get(), store, result)
    seconds = time.perf_counter() - started
    if result.n_quarantined:
        context.log.warning(f"{result.n_quarantined} of {result.catalog_rows} objects quarantined")
    return dg.MaterializeResult(
        metadata={
            "accepted": result.n_accepted,
            "quarantined": result.n_quarantined,
            "catalog_rows": result.catalog_rows,
            "bands": result.cutouts["bands"][0] if result.n_accepted else "",
            "source_bytes": result.bytes_read,
            "lake_bytes": sum(written.values()),
            "seconds": round(seconds, 3),
            "cutouts_per_s": round(result.catalog_rows / max(seconds, 1e-9), 1),
            "source_mb_per_s": round(result.bytes_read / 1e6 / max(seconds, 1e-9), 2),
            "release_fingerprint": result.fingerprint,
            "quarantine_reasons": dg.MetadataValue.md(quarantine_summary_markdown(result.quarantine)),
            "lake_path": dg.MetadataValue.path(lake.get().url("cutouts", result.release, result.shard)),
            **_pictures(context, result),
        },
        data_version=dg.DataVersion(result.data_version),
    )


def _pictures(context: dg.AssetExecutionContext, result: ShardResult) -> dict[str, dg.MetadataValue]:
    """A contact sheet of the shard and its quarantine reasons, for the asset page. The shard is written by now,
    so a picture that cannot be drawn costs a warning, not the materialization."""
    from aion_assets.cutouts.plots import contact_sheet_png, count_reasons, quarantine_reasons_png

    try:
        sheet = contact_sheet_png(result.rgb, result.cutouts["object_id"].to_list())
        reasons = quarantine_reasons_png(count_reasons(result.quarantine["reason"].to_list()))
    except Exception as error:  # noqa: BLE001 - any drawing failure is cosmetic here
        context.log.warning(f"no pictures for {result.partition_key}: {type(error).__name__}: {error}")
        return {}
    return {
        "contact_sheet": dg.MetadataValue.md(png_markdown(sheet, f"cutouts of {result.partition_key}")),
        "quarantine_by_reason": dg.MetadataValue.md(png_markdown(reasons, "quarantined rows by reason")),
    }
