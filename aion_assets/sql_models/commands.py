"""`aion sql`: query the warehouse on a read-only connection, as a table or as JSON."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import shutil
import uuid
from typing import Any

import click


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def rows_as_json(rows: list[dict[str, Any]]) -> str:
    """Rows as a JSON list of objects: dates and timestamps as ISO strings, NaN as null."""

    def clean(value: Any) -> Any:
        # JSON has no NaN or infinity; a consumer would choke on the bare tokens Python writes.
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps([clean(row) for row in rows], default=_json_default, ensure_ascii=False)


@click.command("sql")
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of row objects.")
@click.option("--max-rows", default=100, show_default=True, help="Rows shown in the table view (JSON shows all).")
@click.option("--wait", "wait_s", default=60.0, show_default=True,
              help="Seconds to keep retrying while a writer holds the warehouse.")
def sql(query: str, as_json: bool, max_rows: int, wait_s: float) -> None:
    """Run a read-only QUERY (SELECT, DESCRIBE, SHOW) against the warehouse."""
    import duckdb
    import polars as pl

    from aion_assets.platform.lake import Lake
    from aion_assets.platform.settings import get_settings
    from aion_assets.platform.warehouse import Warehouse
    from aion_assets.sql_models.models import SqlModelError, check_read_only_query

    try:
        check_read_only_query(query)
    except SqlModelError as error:
        raise click.UsageError(str(error)) from error
    settings = get_settings()
    warehouse = Warehouse(settings.warehouse_path, Lake(settings.lake_root), lock_timeout_s=wait_s)
    try:
        frame = warehouse.query(query)
    except duckdb.Error as error:
        raise click.ClickException(str(error).splitlines()[0]) from error

    if as_json:
        click.echo(rows_as_json(frame.to_dicts()))
        return
    width = shutil.get_terminal_size((200, 40)).columns
    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, tbl_width_chars=max(width, 80), fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=False):
        click.echo(frame.head(max_rows))
    shown = min(frame.height, max_rows)
    click.echo(f"({frame.height} row{'s' if frame.height != 1 else ''}"
               + (f", first {shown} shown" if shown < frame.height else "") + ")")


commands = [sql]
