"""SQL models: dependencies from the parsed SQL, load-time errors, materialization into DuckDB, and `aion sql`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from aion_assets.platform.layout import ShardKey
from aion_assets.platform.resources import LakeResource, WarehouseResource, platform_resources
from aion_assets.platform.settings import PROJECT_ROOT, AionSettings
from aion_assets.platform.warehouse import Warehouse
from aion_assets.sql_models.commands import sql as sql_command
from aion_assets.sql_models.defs import build_defs
from aion_assets.sql_models.models import SqlModelError, load_models, sql_dir
from aion_assets.sql_models.sources import SOURCE_TABLES


def write_models(directory: Path, models: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in models.items():
        (directory / f"{name}.sql").write_text(textwrap.dedent(sql))
    return directory


# -- parsing and dependencies ---------------------------------------------------------------------------------

def test_dependencies_come_from_the_parsed_sql(tmp_path: Path) -> None:
    directory = write_models(tmp_path / "models", {
        # CTE over a join, a subquery in WHERE: three source tables, one producing asset
        "per_release": """
            WITH accepted AS (SELECT * FROM cutouts)
            SELECT a.release, l.name, count(*) AS n
            FROM accepted AS a JOIN labels AS l USING (object_id)
            WHERE a.release NOT IN (SELECT release FROM quarantine)
            GROUP BY ALL;
        """,
        # over another model, a derived table, and a table function that is not a table
        "scored": """
            SELECT p.*, e.value, r.range AS k
            FROM per_release AS p
            JOIN (SELECT * FROM eval_results WHERE metric = 'ndcg@10') AS e ON true,
            range(3) AS r
        """,
        # a CTE that shadows a source table reads nothing from the warehouse
        "shadowed": "WITH cutouts AS (SELECT 1 AS x) SELECT * FROM cutouts",
        # a table with no producing asset: read, but no upstream asset
        "bench_view": "SELECT name, avg(value) AS value FROM Bench_Results GROUP BY name",
    })
    models = {m.name: m for m in load_models(directory, SOURCE_TABLES)}

    assert models["per_release"].tables == ["cutouts", "labels", "quarantine"]
    assert models["per_release"].deps == ["raw_cutouts"]
    assert models["scored"].tables == ["eval_results", "per_release"]
    assert models["scored"].deps == ["per_release", "retrieval_eval"]
    assert models["shadowed"].tables == [] and models["shadowed"].deps == []
    assert models["bench_view"].tables == ["bench_results"] and models["bench_view"].deps == []
    order = [m.name for m in load_models(directory, SOURCE_TABLES)]
    assert order.index("per_release") < order.index("scored")


def test_release_summary_reads_the_cutouts_tables() -> None:
    models = {m.name: m for m in load_models(PROJECT_ROOT / "dbt_like_sql", SOURCE_TABLES)}
    summary = models["release_summary"]
    assert summary.tables == ["cutouts", "labels", "quarantine"]
    assert summary.deps == ["raw_cutouts"]


@pytest.mark.parametrize("sql, found", [
    ("CREATE TABLE x AS SELECT * FROM cutouts", "CREATE"),
    ("INSERT INTO cutouts SELECT * FROM cutouts", "INSERT"),
    ("DROP TABLE cutouts", "DROP"),
    ("DELETE FROM quarantine", "DELETE"),
    ("SELECT * INTO copy_of_cutouts FROM cutouts", "INTO"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("SELECT FROM WHERE (", "does not parse"),
])
def test_anything_but_one_select_is_refused_naming_the_file(tmp_path: Path, sql: str, found: str) -> None:
    directory = write_models(tmp_path / "models", {"fine": "SELECT * FROM cutouts", "bad_model": sql})
    with pytest.raises(SqlModelError) as error:
        load_models(directory, SOURCE_TABLES)
    assert "bad_model.sql" in str(error.value)
    assert found in str(error.value)


def test_unknown_table_is_a_load_error_naming_file_and_table(tmp_path: Path) -> None:
    directory = write_models(tmp_path / "models", {
        "typo": "SELECT c.* FROM cutouts AS c JOIN labelz AS l ON l.object_id = c.object_id",
    })
    with pytest.raises(SqlModelError, match=r"typo\.sql: unknown table 'labelz'"):
        load_models(directory, SOURCE_TABLES)


def test_cycle_between_models_is_a_load_error(tmp_path: Path) -> None:
    directory = write_models(tmp_path / "models", {
        "first": "SELECT * FROM second",
        "second": "SELECT * FROM third JOIN cutouts USING (object_id)",
        "third": "SELECT * FROM first",
        "innocent": "SELECT * FROM cutouts",
    })
    with pytest.raises(SqlModelError, match="cycle") as error:
        load_models(directory, SOURCE_TABLES)
    for name in ("first.sql", "second.sql", "third.sql"):
        assert name in str(error.value)
    assert "innocent" not in str(error.value)


def test_model_named_like_a_source_table_is_refused(tmp_path: Path) -> None:
    directory = write_models(tmp_path / "models", {"labels": "SELECT * FROM cutouts"})
    with pytest.raises(SqlModelError, match="labels.sql"):
        load_models(directory, SOURCE_TABLES)


def test_a_missing_or_empty_folder_is_an_error_not_zero_models(tmp_path: Path) -> None:
    with pytest.raises(SqlModelError, match="does not exist"):
        load_models(tmp_path / "nowhere", SOURCE_TABLES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SqlModelError, match="holds no .sql file"):
        load_models(tmp_path / "empty", SOURCE_TABLES)


def test_sql_dir_in_a_checkout_is_the_repository_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed wheel ships the models as aion_assets/sql_models/sql (see setup.py); a checkout has none there.
    from aion_assets.sql_models.models import SOURCE_SQL_DIR, packaged_sql_dir

    monkeypatch.delenv("AION_SQL_DIR", raising=False)
    assert packaged_sql_dir() is None
    assert sql_dir() == SOURCE_SQL_DIR == PROJECT_ROOT / "dbt_like_sql"


def test_build_defs_reads_the_folder_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = write_models(tmp_path / "models", {
        "a_model": "SELECT release FROM cutouts",
        "b_model": "SELECT * FROM a_model",
    })
    monkeypatch.setenv("AION_SQL_DIR", str(directory))
    assert sql_dir() == directory.resolve()
    defs = dg.Definitions.merge(build_defs(), dg.Definitions(resources=platform_resources()))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    b_node = graph.get(dg.AssetKey("b_model"))
    assert b_node.group_name == "sql"
    assert b_node.parent_keys == {dg.AssetKey("a_model")}
    assert graph.get(dg.AssetKey("a_model")).parent_keys == {dg.AssetKey("raw_cutouts")}
    sql_text = (directory / "b_model.sql").read_text().strip()
    assert b_node.code_version == hashlib.sha256(sql_text.encode()).hexdigest()[:16]


# -- materialization -------------------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(timezone.utc)


def write_sample_tables(warehouse: Warehouse) -> dict[str, pl.DataFrame]:
    """Tiny tables in the shape of the cutouts contracts: two labelled releases over two shards, one unlabelled."""
    cutouts = pl.DataFrame({
        "object_id": ["a1", "a2", "a3", "b1", "b2", "u1"],
        "release": ["alpha", "alpha", "alpha", "beta", "beta", "unl"],
        "shard": ["0000", "0000", "0001", "0000", "0000", "0000"],
        "row": pl.Series([0, 1, 0, 0, 1, 0], dtype=pl.Int32),
        "ra": [10.0, 10.1, None, 150.2, 150.3, None],
        "dec": [-1.0, -1.1, None, 2.2, 2.3, None],
        "bands": ["rgb"] * 6,
        "ingested_at": [_now()] * 6,
    })
    labels = pl.DataFrame({
        "object_id": ["a1", "a2", "a3", "a1", "b1", "b2", "b2"],
        "release": ["alpha", "alpha", "alpha", "alpha", "beta", "beta", "beta"],
        "name": ["kind", "kind", "kind", "ring", "is_lens", "is_lens", "category"],
        "value": ["spiral", "elliptical", "spiral", "1", "0", "", "lens"],
        "value_num": [None, None, None, 1.0, 0.0, None, None],
    })
    quarantine = pl.DataFrame({
        "release": ["alpha", "unl", "broken"],
        "shard": ["0000", "0000", None],
        "object_id": ["a9", "u7", None],
        "source_path": ["images/a9.jpg", "../../etc/passwd", None],
        "reason": ["truncated JPEG", "path escapes the release folder", "catalog misses column 'image'"],
        "seen_at": [_now()] * 3,
    })
    for table, frame in {"cutouts": cutouts, "labels": labels, "quarantine": quarantine}.items():
        shard = pl.coalesce(pl.col("shard"), pl.lit("0000")) if "shard" in frame.columns else pl.lit("0000")
        for (release, key_shard), part in frame.with_columns(shard.alias("_shard")).group_by(["release", "_shard"]):
            warehouse.write_lake_partition(table, ShardKey(release, key_shard), part.drop("_shard"))
    return {"cutouts": cutouts, "labels": labels, "quarantine": quarantine}


def materialize_models(directory: Path, aion_home: AionSettings, raise_on_error: bool = True):
    lake = LakeResource(root=aion_home.lake_root)
    defs = build_defs(directory)
    assets = list(defs.assets or [])
    return dg.materialize(
        assets, resources={"warehouse": WarehouseResource(path=str(aion_home.warehouse_path), lake=lake)},
        raise_on_error=raise_on_error,
    )


def test_release_summary_materializes_from_lake_tables(
        tmp_path: Path, aion_home: AionSettings, warehouse: Warehouse) -> None:
    frames = write_sample_tables(warehouse)
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / "release_summary.sql").write_text((PROJECT_ROOT / "dbt_like_sql" / "release_summary.sql").read_text())
    # a model over the model: it must run after release_summary in the same run
    (directory / "release_totals.sql").write_text(
        "SELECT release, max(objects) AS objects, count(label_name) AS label_names "
        "FROM release_summary GROUP BY release")

    result = materialize_models(directory, aion_home)
    assert result.success

    summary = warehouse.query("SELECT * FROM release_summary ORDER BY release, label_name NULLS FIRST")
    cutouts, labels, quarantine = frames["cutouts"], frames["labels"], frames["quarantine"]
    expected_objects = dict(cutouts.group_by("release").len().iter_rows())
    object_level = quarantine.filter(pl.col("object_id").is_not_null() | pl.col("source_path").is_not_null())
    expected_quarantined = dict(object_level.group_by("release").len().iter_rows())
    expected_labelled = dict(
        ((r, n), k) for r, n, k in labels.filter(pl.col("value") != "")
        .group_by(["release", "name"]).agg(pl.col("object_id").n_unique()).iter_rows()
    )
    releases = set(cutouts["release"]) | set(quarantine["release"])
    assert set(summary["release"]) == releases
    for row in summary.iter_rows(named=True):
        assert row["objects"] == expected_objects.get(row["release"], 0)
        assert row["quarantined"] == expected_quarantined.get(row["release"], 0)
        if row["label_name"] is None:
            # only releases with no label at all get the NULL row
            assert row["release"] not in set(labels["release"]) and row["labelled_objects"] == 0
        else:
            assert row["labelled_objects"] == expected_labelled[(row["release"], row["label_name"])]
    assert set(zip(summary["release"], summary["label_name"])) >= set(expected_labelled)

    totals = warehouse.query("SELECT * FROM release_totals ORDER BY release")
    assert dict(zip(totals["release"], totals["objects"])) == {r: expected_objects.get(r, 0) for r in releases}

    materialization = result.asset_materializations_for_node("release_summary")[0]
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == summary.height
    assert [c.name for c in metadata["dagster/column_schema"].schema.columns] == summary.columns
    assert "alpha" in metadata["preview"].value and "| release |" in metadata["preview"].value
    assert "FROM cutouts" in metadata["sql"].value


def test_missing_upstream_table_fails_clearly(tmp_path: Path, aion_home: AionSettings, warehouse: Warehouse) -> None:
    write_sample_tables(warehouse)
    directory = write_models(tmp_path / "models", {
        "leaderboard": "SELECT e.*, c.release FROM eval_results AS e JOIN cutouts AS c USING (object_id)",
    })
    result = materialize_models(directory, aion_home, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "eval_results" in message and "retrieval_eval" in message
    assert "materialize retrieval_eval" in message
    assert "leaderboard" not in warehouse.tables()


# -- aion sql --------------------------------------------------------------------------------------------------

def test_aion_sql_json_and_table(aion_home: AionSettings, warehouse: Warehouse) -> None:
    stamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    warehouse.append("bench_results", pl.DataFrame({
        "name": ["ingest", "ingest"], "metric": ["cutouts_per_s", "mb_per_s"], "value": [812.5, float("nan")],
        "unit": ["1/s", "MB/s"], "machine": ["test", "test"], "created_at": [stamp, stamp],
    }))
    runner = CliRunner()
    result = runner.invoke(sql_command, ["SELECT * FROM bench_results ORDER BY metric", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["metric"] for r in rows] == ["cutouts_per_s", "mb_per_s"]
    assert rows[0]["value"] == 812.5 and rows[1]["value"] is None
    assert datetime.fromisoformat(rows[0]["created_at"]) == stamp

    table = runner.invoke(sql_command, ["SELECT metric, value FROM bench_results ORDER BY metric"])
    assert table.exit_code == 0, table.output
    assert "cutouts_per_s" in table.output and "812.5" in table.output and "(2 rows)" in table.output


@pytest.mark.parametrize("statement", [
    "DROP TABLE bench_results",
    "DELETE FROM bench_results",
    "COPY bench_results TO 'out.csv'",
    "SELECT 1; DROP TABLE bench_results",
])
def test_aion_sql_refuses_writes(aion_home: AionSettings, warehouse: Warehouse, statement: str) -> None:
    warehouse.append("bench_results", pl.DataFrame({"name": ["x"], "value": [1.0]}))
    result = CliRunner().invoke(sql_command, [statement])
    assert result.exit_code != 0
    assert "read-only" in result.output or "one statement" in result.output
    assert warehouse.query("SELECT count(*) AS n FROM bench_results")["n"][0] == 1


def test_aion_sql_unknown_table_is_one_clear_line(aion_home: AionSettings, warehouse: Warehouse) -> None:
    result = CliRunner().invoke(sql_command, ["SELECT * FROM no_such_table"])
    assert result.exit_code == 1
    assert "no_such_table" in result.output and "Traceback" not in result.output


HOLD_WRITE_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("BEGIN")
con.execute("INSERT INTO readings VALUES (99)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
con.close()
"""


def test_aion_sql_waits_for_a_writer_in_another_process(aion_home: AionSettings, warehouse: Warehouse) -> None:
    warehouse.append("readings", pl.DataFrame({"value": [1, 2]}))
    hold_s = 1.0
    writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(aion_home.warehouse_path), str(hold_s)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        started = time.monotonic()
        # the contention is real: a plain read-only open fails right now
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(aion_home.warehouse_path), read_only=True)
        result = CliRunner().invoke(sql_command, ["SELECT sum(value) AS total FROM readings", "--json"])
        waited = time.monotonic() - started
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert result.exit_code == 0, result.output
    # it read after the writer committed: the held row is included, and it had to wait for it
    assert json.loads(result.output) == [{"total": 102}]
    assert waited > hold_s * 0.5
