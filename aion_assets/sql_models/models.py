"""SQL models: a folder of SELECT-only ``.sql`` files, each becoming one warehouse table. Pure: no dagster import.

Dependencies are read from the parsed SQL (sqlglot, DuckDB dialect), never by pattern matching, so that CTE names,
aliases, subqueries and table functions are told apart from the tables a model really reads.
"""

from __future__ import annotations

import graphlib
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.optimizer.scope import traverse_scope

from aion_assets.platform.settings import PROJECT_ROOT, get_settings

DIALECT = "duckdb"
MODEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Schemas that mean "the warehouse itself"; anything else (information_schema, an attached file) is not a model input.
LOCAL_SCHEMAS = ("", "main")


class SqlModelError(ValueError):
    """A model that cannot be loaded: bad SQL, a statement other than SELECT, an unknown table, a cycle."""


@dataclass(frozen=True)
class SqlModel:
    name: str
    path: Path
    sql: str
    tables: list[str]  # every warehouse table the SQL reads, lower-case, sorted
    deps: list[str]  # upstream asset keys: producing assets of source tables, and other models

    @property
    def code_version(self) -> str:
        """Changes exactly when the SQL text changes, so the UI marks the table and what reads it as stale."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


# The models live in dbt_like_sql/ at the repository root; the build (setup.py) ships them in the package as
# aion_assets/sql_models/sql/, so an installed wheel (a container image) has them without the repository.
PACKAGED_SQL_DIR = "sql"
SOURCE_SQL_DIR = PROJECT_ROOT / "dbt_like_sql"


def packaged_sql_dir() -> Path | None:
    """The models shipped in the installed package, or None in a source checkout (an editable install)."""
    packaged = files("aion_assets.sql_models") / PACKAGED_SQL_DIR
    # An installed package is a folder on disk (wheels are unpacked), so the Traversable is a real path.
    return Path(str(packaged)) if packaged.is_dir() else None


def sql_dir() -> Path:
    """The models folder: AION_SQL_DIR, else the models shipped in the package, else ``dbt_like_sql/``."""
    return get_settings().sql_dir or packaged_sql_dir() or SOURCE_SQL_DIR


def _parse_statements(sql: str, where: str) -> list[exp.Expression]:
    sqlglot_logger = logging.getLogger("sqlglot")
    previous = sqlglot_logger.level
    # sqlglot warns when it falls back to an opaque Command; we report that ourselves.
    sqlglot_logger.setLevel(logging.ERROR)
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=DIALECT) if s is not None]
    except ParseError as error:
        raise SqlModelError(f"{where}: SQL does not parse: {error}") from error
    finally:
        sqlglot_logger.setLevel(previous)
    return statements


def _statement_kind(statement: exp.Expression) -> str:
    if isinstance(statement, exp.Command):
        return str(statement.this).upper()
    if isinstance(statement, exp.Into):
        return "SELECT ... INTO"
    if isinstance(statement, (exp.Column, exp.Identifier)):  # a bare keyword sqlglot did not recognise
        return statement.sql(dialect=DIALECT).split()[0].upper()
    return statement.key.upper()


def parse_select(sql: str, where: str) -> exp.Query:
    """The single SELECT in ``sql``; anything else (DDL, DML, several statements, SELECT INTO) is refused."""
    statements = _parse_statements(sql, where)
    if not statements:
        raise SqlModelError(f"{where}: no SQL statement found")
    if len(statements) > 1:
        raise SqlModelError(f"{where}: exactly one SELECT statement is allowed, found {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise SqlModelError(
            f"{where}: only a SELECT is allowed, found {_statement_kind(statement)} "
            "(models are materialized by the platform; write just the query)"
        )
    writer = statement.find(exp.Into, exp.DDL, exp.DML)
    if writer is not None:
        raise SqlModelError(f"{where}: only a read-only SELECT is allowed, found {_statement_kind(writer)} inside it")
    return statement


def referenced_tables(query: exp.Query, where: str) -> list[str]:
    """Warehouse tables the query reads: CTE names, derived tables and table functions are not tables."""
    found: set[str] = set()
    for scope in traverse_scope(query):
        for source in scope.sources.values():
            # A CTE or subquery source is a Scope; a table function is a Table whose `this` is a function call.
            if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
                continue
            schema = (source.db or "").lower()
            if source.catalog or schema not in LOCAL_SCHEMAS:
                raise SqlModelError(
                    f"{where}: table {source.sql(dialect=DIALECT)!r} is outside the warehouse's main schema"
                )
            # DuckDB matches identifiers case-insensitively, quoted or not.
            found.add(source.name.lower())
    return sorted(found)


def parse_model(path: Path) -> tuple[str, str, list[str]]:
    """(model name, SQL text, tables read) of one ``.sql`` file, or a SqlModelError naming the file."""
    name = path.stem
    if not MODEL_NAME.match(name):
        raise SqlModelError(f"{path.name}: a model's file name must be a SQL identifier (letters, digits, _)")
    sql = path.read_text().strip().rstrip(";").strip()
    query = parse_select(sql, path.name)
    return name, sql, referenced_tables(query, path.name)


def load_models(directory: Path, source_tables: Mapping[str, str | None]) -> list[SqlModel]:
    """Every model in ``directory`` in dependency order, with upstream asset keys resolved.

    ``source_tables`` maps a warehouse table to the asset that writes it (None: no producing asset). A missing
    or empty folder is an error: a misconfigured AION_SQL_DIR must not quietly remove every model.
    """
    if not directory.is_dir():
        raise SqlModelError(f"SQL models folder {directory} does not exist (set AION_SQL_DIR to a folder of .sql files)")
    paths = sorted(directory.glob("*.sql"))
    if not paths:
        raise SqlModelError(f"SQL models folder {directory} holds no .sql file")
    parsed: dict[str, tuple[Path, str, list[str]]] = {}
    for path in paths:
        name, sql, tables = parse_model(path)
        key = name.lower()
        if key in source_tables:
            raise SqlModelError(f"{path.name}: model name {name!r} would replace the source table of the same name")
        if key in parsed:
            raise SqlModelError(f"{path.name}: model {name!r} is defined twice (table names ignore case)")
        parsed[key] = (path, sql, tables)

    models: dict[str, SqlModel] = {}
    graph: dict[str, set[str]] = {}
    for key, (path, sql, tables) in parsed.items():
        deps: set[str] = set()
        upstream_models: set[str] = set()
        for table in tables:
            if table in parsed:
                upstream_models.add(table)
                deps.add(parsed[table][0].stem)
            elif table in source_tables:
                if source_tables[table] is not None:
                    deps.add(str(source_tables[table]))
            else:
                known = ", ".join(sorted(set(source_tables) | set(parsed)))
                raise SqlModelError(
                    f"{path.name}: unknown table {table!r}: neither a source table nor another model (known: {known})"
                )
        graph[key] = upstream_models
        models[key] = SqlModel(name=path.stem, path=path, sql=sql, tables=tables, deps=sorted(deps))

    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        files = " -> ".join(f"{parsed[node][0].name}" for node in cycle)
        raise SqlModelError(f"SQL models form a cycle: {files}") from error
    return [models[key] for key in order]


READ_ONLY_STATEMENTS = (exp.Query, exp.Describe, exp.Show, exp.Summarize, exp.Pragma, exp.Values)


def check_read_only_query(sql: str) -> None:
    """Refuse anything but one reading statement (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) for `aion sql`.

    The connection is opened read-only as well; this check gives a clear message and also stops statements a
    read-only connection would still run (COPY ... TO a file, ATTACH, SET).
    """
    statements = _parse_statements(sql, "query")
    if len(statements) != 1:
        raise SqlModelError(f"one statement at a time, found {len(statements)}")
    statement = statements[0]
    if isinstance(statement, exp.Command) and str(statement.this).upper() == "EXPLAIN":
        return
    writer = statement.find(exp.Into, exp.DDL, exp.DML) if isinstance(statement, READ_ONLY_STATEMENTS) else statement
    if writer is not None:
        raise SqlModelError(f"only read-only queries are allowed (SELECT, DESCRIBE, SHOW), found {_statement_kind(writer)}")
