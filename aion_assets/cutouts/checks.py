"""Asset checks on `raw_cutouts`, from the lake tables the asset wrote.

- every catalog row is accounted for: per shard, rows in `cutouts` + object-level rows in `quarantine` equal the
  catalog rows the shard covers (nothing dropped silently, nothing doubled);
- object_id is unique within a release, across all its shards, in `cutouts`.

Scope: in a run for one partition (what the sensor launches) the checks cover that partition's release, all its
materialized shards; a run without a partition (checks launched alone from the UI) covers every release in the
lake. Dagster 1.13's partitioned asset checks are a preview feature that cannot yet run on their own for a
partition, so the checks read the partition from the run instead.
"""

import dagster as dg
import polars as pl

from aion_assets.cutouts.assets import raw_cutouts
from aion_assets.cutouts.ingest import count_balance, duplicate_ids, materialized_shards
from aion_assets.platform.layout import ShardKey
from aion_assets.platform.resources import LakeResource, ReleasesResource

PARTITION_TAG = "dagster/partition"


def _releases_in_scope(context: dg.AssetCheckExecutionContext, lake) -> list[str]:
    key = context.run.tags.get(PARTITION_TAG)
    if key:
        return [ShardKey.parse(key).release]
    return sorted({ShardKey.parse(k).release for k in materialized_shards(lake)})


@dg.asset_check(
    asset=raw_cutouts,
    blocking=True,
    description="per shard: rows in cutouts + quarantined objects == catalog rows the shard covers",
)
def cutouts_account_for_catalog(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, releases: ReleasesResource
) -> dg.AssetCheckResult:
    store = lake.get()
    balances = [
        count_balance(store, releases.root(), key)
        for release in _releases_in_scope(context, store)
        for key in materialized_shards(store, release)
    ]
    failed = [b for b in balances if not b.passed]
    lines = [f"- {'FAIL' if not b.passed else 'ok'}: {b.message}" for b in (failed or balances)[:20]]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(failed)} of {len(balances)} shard(s) do not balance: {failed[0].message}" if failed
                     else f"{len(balances)} shard(s) balance"),
        metadata={
            "shards_checked": len(balances),
            "shards_failing": len(failed),
            "cutouts": sum(b.cutouts for b in balances),
            "quarantined": sum(b.quarantined for b in balances),
            "catalog_rows": sum(max(b.catalog_rows, 0) for b in balances),
            "details": dg.MetadataValue.md("\n".join(lines) or "no materialized shard"),
        },
    )


@dg.asset_check(
    asset=raw_cutouts,
    blocking=True,
    description="object_id is unique within each release in the cutouts table (across all its shards)",
)
def cutouts_object_id_unique(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.get()
    found = [duplicate_ids(store, release).with_columns(release=pl.lit(release))
             for release in _releases_in_scope(context, store)]
    duplicates = pl.concat(found) if found else pl.DataFrame()
    return dg.AssetCheckResult(
        passed=duplicates.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        description="object_id unique per release" if duplicates.is_empty()
        else f"{duplicates.height} object_id(s) appear more than once within a release",
        metadata={
            "releases_checked": len(found),
            "duplicate_ids": duplicates.height,
            "examples": dg.MetadataValue.md("\n".join(
                f"- {r}: {i} ({n}x)" for i, n, r in duplicates.head(10).iter_rows()) or "none"),
        },
    )


cutouts_checks = [cutouts_account_for_catalog, cutouts_object_id_unique]
