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

    from aion_assets.platform.settings import get_settings
    from aion_assets.platform.warehouse import stack_warehouse
    from aion_assets.sql_models.models import SqlModelError, check_read_only_query

    try:
        check_read_only_query(query)
    except SqlModelError as error:
        raise click.UsageError(str(error)) from error
    settings = get_settings()
    warehouse = stack_warehouse(settings, lock_timeout_s=wait_s)
    try:
        columns, rows = warehouse.query_rows(query)
    except duckdb.Error as error:
        raise click.ClickException(str(error).splitlines()[0]) from error

    if as_json:
        click.echo(rows_as_json([dict(zip(columns, row)) for row in rows]))
        return
    click.echo(text_table(columns, rows[:max_rows], shutil.get_terminal_size((200, 40)).columns))
    shown = min(len(rows), max_rows)
    click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
               + (f", first {shown} shown" if shown < len(rows) else "") + ")")


def text_table(columns: list[str], rows: list[tuple], width: int, max_cell: int = 60) -> str:
    """Rows as an aligned text table: cells cut to ``max_cell`` characters, columns dropped past ``width``."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value).replace("\n", " ")
        return text if len(text) <= max_cell else text[: max_cell - 1] + "…"

    body = [[cell(value) for value in row] for row in rows]
    widths = [max([len(name)] + [len(line[i]) for line in body]) for i, name in enumerate(columns)]
    keep, used = 0, 0
    for column_width in widths:
        if keep and used + column_width + 3 > max(width, 80):
            break
        keep, used = keep + 1, used + column_width + 3
    lines = [" | ".join(name.ljust(w) for name, w in zip(columns[:keep], widths)),
             "-+-".join("-" * w for w in widths[:keep])]
    lines += [" | ".join(value.ljust(w) for value, w in zip(line[:keep], widths)) for line in body]
    if keep < len(columns):
        lines.append(f"({len(columns) - keep} more column(s) not shown: use --json)")
    return "\n".join(lines)


commands = [sql]
