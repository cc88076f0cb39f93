"""description_sample + vlm_descriptions as Dagster runs them, on a tiny ingested subset of a real release.

The raw cutouts are written here in the contract format (lake table ``cutouts`` + canonical shard arrays), so
this test does not depend on the ingestion code.
"""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey
from aion_assets.platform.resources import platform_resources
from aion_assets.platform.warehouse import Warehouse, fetch_polars
from aion_assets.runner import materialize, stack_instance
from aion_assets.vlm.defs import build_defs
from aion_assets.vlm.describers import RecordedDescriber
from aion_assets.vlm.resources import DescriberResource
from aion_assets.vlm.sample import SAMPLE_PATH, draw_sample

RELEASE = "gz-decals-rings"


def ingest(lake: Lake, warehouse: Warehouse, release_dir: Path, limit: int, stale: set[str]) -> pl.DataFrame:
    """Write shard 0000 of a release as raw_cutouts would; objects in ``stale`` get a sha256 that no longer
    matches their image (as if the file changed after the answers were recorded)."""
    catalog = pl.read_csv(release_dir / "catalog.csv", infer_schema_length=0).head(limit)
    images, rows = [], []
    for index, entry in enumerate(catalog.iter_rows(named=True)):
        data = (release_dir / entry["image"]).read_bytes()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        images.append(np.asarray(image))
        sha = hashlib.sha256(data).hexdigest()
        rows.append({
            "object_id": entry["object_id"], "release": RELEASE, "shard": "0000", "row": index,
            "ra": float(entry["ra"]), "dec": float(entry["dec"]), "healpix": None, "source_path": entry["image"],
            "width": image.width, "height": image.height, "bands": "rgb",
            "sha256": hashlib.sha256(sha.encode()).hexdigest() if entry["object_id"] in stale else sha,
            "ingested_at": datetime.now(timezone.utc),
        })
    cutouts = pl.DataFrame(rows, schema_overrides={"row": pl.Int32, "width": pl.Int32, "height": pl.Int32,
                                                   "healpix": pl.Int64})
    lake.write_array(np.stack(images), "cutouts", RELEASE, "0000", "rgb.npy")
    lake.write_parquet(cutouts.select("object_id", "release", "shard", "row", "ra", "dec", "bands", "sha256"),
                       "cutouts", RELEASE, "0000", "objects.parquet")
    warehouse.write_lake_partition("cutouts", str(ShardKey(RELEASE, "0000")), cutouts)
    return cutouts


def definitions(describer: DescriberResource) -> dg.Definitions:
    return dg.Definitions.merge(build_defs(describer), dg.Definitions(resources=platform_resources()))


def latest(instance: dg.DagsterInstance, key: str) -> dg.AssetMaterialization:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None and event.asset_materialization is not None
    return event.asset_materialization


def read(warehouse: Warehouse, sql: str) -> pl.DataFrame:
    with warehouse.connect() as con:
        return fetch_polars(con, sql)


def test_seeded_sample_is_random_but_reproducible() -> None:
    cutouts = pl.DataFrame({"object_id": [f"o{i:03d}" for i in range(200)], "release": ["r"] * 200,
                            "sha256": ["x"] * 200, "shard": ["0000"] * 200, "row": list(range(200))})
    first, again = draw_sample(cutouts, 20, seed=7), draw_sample(cutouts.reverse(), 20, seed=7)
    assert first.height == 20 and first.equals(again)  # file order does not matter, the seed does
    assert not first.equals(draw_sample(cutouts, 20, seed=8))
    assert first["row"].to_list() != list(range(20))  # not simply the first rows


def test_recorded_describer_materializes_descriptions(aion_home, lake, warehouse, monkeypatch, shared_data,
                                                      fake_anthropic, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("AION_DESCRIBER", raising=False)
    recorded = RecordedDescriber().recorded_keys().filter(pl.col("release") == RELEASE)
    cutouts = ingest(lake, warehouse, shared_data / "releases" / RELEASE, limit=30, stale=set())
    answered = sorted(set(cutouts["object_id"]) & set(recorded["object_id"]))
    assert len(answered) >= 4
    stale = answered[0]
    ingest(lake, warehouse, shared_data / "releases" / RELEASE, limit=30, stale={stale})

    instance = stack_instance()
    recorded_defs = definitions(DescriberResource())
    runs = materialize(recorded_defs, "group:descriptions", instance, progress=lambda _: None)
    assert runs and all(run.success for run in runs)

    sample = lake.read_parquet(*SAMPLE_PATH)
    assert sorted(sample["object_id"]) == answered  # recorded set ∩ ingested
    assert {"object_id", "release", "sha256", "shard", "row"} <= set(sample.columns)
    meta = latest(instance, "description_sample").metadata
    assert meta["n"].value == len(answered) and meta["describer"].value == "recorded (no ANTHROPIC_API_KEY)"

    descriptions = read(warehouse, "SELECT * FROM descriptions ORDER BY object_id")
    assert descriptions.columns == ["object_id", "release", "describer", "model", "prompt_version", "description",
                                    "summary", "input_tokens", "output_tokens", "cost_usd", "created_at"]
    assert descriptions["object_id"].to_list() == answered[1:]
    failures = read(warehouse, "SELECT object_id, status, reason FROM description_failures")
    assert failures.rows() == [(stale, "refused", "sha256 mismatch")]
    first = latest(instance, "vlm_descriptions")
    assert first.metadata["successes"].value == len(answered) - 1 and first.metadata["failures"].value == 1
    assert first.metadata["cost_usd"].value == 0.0

    # Again: the same rows replace themselves (no duplicates) and the data version is unchanged.
    materialize(recorded_defs, "key:vlm_descriptions", instance, progress=lambda _: None)
    assert read(warehouse, "SELECT count(*) AS n FROM descriptions")["n"][0] == len(answered) - 1
    second = latest(instance, "vlm_descriptions")
    assert second.tags["dagster/data_version"] == first.tags["dagster/data_version"]

    # The live describer (the fake server behind the real SDK) drops in through the same resource.
    key = "sk-ant-test-dagster-" + "f" * 24
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    live = DescriberResource(base_url=fake_anthropic.base_url, max_retries=0, timeout_s=10, sample_size=5, seed=3)
    live_defs = definitions(live)
    graph, recorded_graph = live_defs.resolve_asset_graph(), recorded_defs.resolve_asset_graph()
    version = graph.get(dg.AssetKey("vlm_descriptions")).code_version
    assert version.startswith("anthropic|")
    assert version != recorded_graph.get(dg.AssetKey("vlm_descriptions")).code_version
    runs = materialize(live_defs, "group:descriptions", instance, progress=lambda _: None)
    assert all(run.success for run in runs)
    assert fake_anthropic.count("POST", "/v1/messages") == 5
    by_describer = dict(read(warehouse, "SELECT describer, count(*) FROM descriptions GROUP BY 1").rows())
    assert by_describer == {"vlm-recorded": len(answered) - 1, "vlm-anthropic": 5}
    live_meta = latest(instance, "vlm_descriptions").metadata
    assert live_meta["describer"].value == "anthropic (ANTHROPIC_API_KEY is set)"
    assert live_meta["api_requests"].value == 5 and live_meta["cost_usd"].value > 0
    stored = repr({k: v.value for k, v in live_meta.items()}) + repr(latest(instance, "description_sample").metadata)
    stored += capsys.readouterr().out
    for table in warehouse.tables():
        stored += read(warehouse, f'SELECT * FROM "{table}"').write_csv()
    assert key not in stored

    # A re-materialization sends nothing: every image is in the cache.
    materialize(live_defs, "key:vlm_descriptions", instance, progress=lambda _: None)
    assert fake_anthropic.count("POST", "/v1/messages") == 5
    assert latest(instance, "vlm_descriptions").metadata["cache_hits"].value == 5


@pytest.mark.parametrize("kind", ["recorded", "anthropic"])
def test_code_version_names_describer_model_and_prompt(kind, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-x")
    version = DescriberResource(kind=kind, model="claude-haiku-4-5").code_version()
    assert version.startswith(kind) and "prompt v1:" in version
    assert ("claude-haiku-4-5" in version) == (kind == "anthropic")
