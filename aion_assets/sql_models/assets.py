"""One Dagster asset per SQL model (group `sql`), materialized as a DuckDB table. Thin: the parsing is in models.py."""

# No `from __future__ import annotations` here: Dagster reads the context and resource annotations at runtime.

from collections.abc import Mapping

import dagster as dg

from aion_assets.platform.markdown import markdown_table
from aion_assets.platform.resources import WarehouseResource
from aion_assets.sql_models.models import SqlModel

PREVIEW_ROWS = 10


def _sql_markdown(sql: str) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(f"```sql\n{sql}\n```")


def sql_model_asset(model: SqlModel, source_tables: Mapping[str, str | None]) -> dg.AssetsDefinition:
    """The asset that (re)builds ``model.name`` from its SELECT, after every asset that writes a table it reads."""

    @dg.asset(
        name=model.name,
        group_name="sql",
        deps=model.deps,
        code_version=model.code_version,
        pool="duckdb_writer",
        kinds={"duckdb", "sql"},
        description=f"SQL model `{model.path.name}`: reads {', '.join(model.tables) or 'no table'}.",
        metadata={"sql": _sql_markdown(model.sql), "path": dg.MetadataValue.path(str(model.path))},
    )
    def _sql_model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get()
        missing = [table for table in model.tables if table not in {t.lower() for t in store.tables()}]
        if missing:
            producers = sorted({source_tables[t] for t in missing if source_tables.get(t)})
            unwritten = sorted(t for t in missing if not source_tables.get(t))
            hints = ([f"materialize {', '.join(producers)} first"] if producers else []) + (
                [f"{', '.join(unwritten)} is written outside any asset (searches, benchmarks, the re-ranker): "
                 "nothing written yet"] if unwritten else [])
            raise dg.Failure(
                description=f"{model.name} reads {', '.join(missing)}, not in the warehouse yet: {'; '.join(hints)}",
                metadata={"missing_tables": ", ".join(missing)},
            )
        rows = store.create_table_as(model.name, model.sql)
        context.log.info(f"{model.name}: {rows} rows")
        columns = store.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ? "
            "ORDER BY ordinal_position",
            [model.name],
        )
        schema = dg.TableSchema(columns=[
            dg.TableColumn(name=name, type=dtype) for name, dtype in columns.iter_rows()
        ])
        preview = store.query(f'SELECT * FROM "{model.name}" LIMIT {PREVIEW_ROWS + 1}')
        return dg.MaterializeResult(metadata={
            "dagster/row_count": dg.MetadataValue.int(rows),
            "dagster/column_schema": schema,
            "dagster/table_name": dg.MetadataValue.text(model.name),
            "preview": dg.MetadataValue.md(markdown_table(preview, max_rows=PREVIEW_ROWS)),
            "sql": _sql_markdown(model.sql),
        })

    return _sql_model
