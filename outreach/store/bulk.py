"""Many rows into (or onto) one table in one statement.

On PostgreSQL the rows go in as one array per column (`… FROM unnest(…)`): one short
statement, the same text whatever the number of rows, where an executemany costs a round of
the driver's work per row and a multi-row VALUES a statement the driver must parse anew for
every batch size. The arrays go to psycopg directly, in its binary format: as text, every
element of every array would be searched and escaped by a regular expression, which costs
more than the insert. On SQLite the rows go to the driver's executemany of one prepared
statement, each value converted by its column's type once, without SQLAlchemy's per-row
work (which costs several times the insert itself). Rows are inserted in the order given
(so serial ids follow it). A single row on PostgreSQL takes the given statement.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Dialect, Table, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from outreach.store.keysets import keys_in
from outreach.store.types import Amount, UTCDateTime

_STATEMENTS: dict[tuple[str, ...], tuple[Any, list[Any]]] = {}


def _arrays(table: Table, columns: Sequence[str], dialect: Dialect) -> tuple[str, list[Any]]:
    """`CAST(%(c)b AS type[])` for each column (psycopg's binary placeholders), and each column's
    bind processor."""
    arrays = ", ".join(
        f"CAST(%({name})b AS {table.c[name].type.compile(dialect=dialect)}[])" for name in columns
    )
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    ]
    return arrays, processors


def _unnest_insert(
    table: Table,
    columns: tuple[str, ...],
    conflict: str | None,
    returning: str | None,
    dialect: Dialect,
) -> tuple[Any, list[Any]]:
    """The statement and each column's bind processor, built once per shape; every name in
    it is one of the table's own columns (`table.c[name]` refuses any other)."""
    key = ("insert", table.name, *columns, f"conflict={conflict}", f"returning={returning}")
    found = _STATEMENTS.get(key)
    if found is None:
        arrays, processors = _arrays(table, columns, dialect)
        names = ", ".join(columns)
        sql = (
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest({arrays}) "  # noqa: S608
            # the ordinality's name is no column's (a table may have a `position`)
            f"WITH ORDINALITY AS rows ({names}, ordinality_) ORDER BY ordinality_"
        )
        if conflict is not None:
            sql += f" ON CONFLICT ({table.c[conflict].name}) DO NOTHING"
        if returning is not None:
            sql += f" RETURNING {table.c[returning].name}"
        found = _STATEMENTS[key] = (sql, processors)
    return found


def _unnest_update(table: Table, key: str, columns: tuple[str, ...], dialect: Dialect) -> Any:
    cache_key = ("update", table.name, key, *columns)
    found = _STATEMENTS.get(cache_key)
    if found is None:
        arrays, processors = _arrays(table, (key, *columns), dialect)
        names = ", ".join((key, *columns))
        assignments = ", ".join(f"{table.c[name].name} = rows.{name}" for name in columns)
        sql = (
            f"UPDATE {table.name} SET {assignments} FROM unnest({arrays}) "  # noqa: S608
            f"AS rows ({names}) WHERE {table.name}.{table.c[key].name} = rows.{key}"
        )
        found = _STATEMENTS[cache_key] = (sql, processors)
    return found


def _binary(session: Session, sql: str, params: dict[str, list[Any]]) -> Any:
    """Run `sql` with psycopg in the session's transaction, parameters in binary; returns
    the driver's cursor. The driver's errors are raised as SQLAlchemy raises them (a lost
    server as OperationalError, a deadlock with its SQLSTATE on `.orig`, parameters hidden),
    so `store.db.transaction` maps an outage to StoreUnavailable and the inbox's conflict
    retries see a deadlock here as they see one anywhere else."""
    import psycopg

    connection = session.connection()
    driver: Any = connection.connection.dbapi_connection
    cursor = driver.cursor()
    try:
        cursor.execute(sql, params, binary=True)
    except psycopg.Error as error:
        dialect = connection.dialect
        raise DBAPIError.instance(
            sql,
            None,
            error,
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=dialect.is_disconnect(cast(Any, error), driver, cursor),
            dialect=dialect,
        ) from error
    return cursor


def _params(
    columns: Sequence[str], processors: list[Any], rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {}
    for name, process in zip(columns, processors, strict=True):
        values = [row[name] for row in rows]
        params[name] = [_processed(process, value) for value in values] if process else values
    return params


def _processed(process: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else process(value)


def _driver_statement(
    table: Table, kind: str, columns: tuple[str, ...], extra: str, dialect: Dialect
) -> tuple[str, list[Any]]:
    """SQL for the driver's executemany with positional parameters, and each parameter's
    bind processor; built once per shape. Every name in it is one of the table's own
    columns (`table.c[name]` refuses any other)."""
    key = ("driver", kind, table.name, *columns, extra)
    found = _STATEMENTS.get(key)
    if found is None:
        names = [table.c[name].name for name in columns]
        if kind == "insert":
            marks = ", ".join("?" for _ in names)
            sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})"  # noqa: S608
            if extra:
                sql += f" ON CONFLICT ({table.c[extra].name}) DO NOTHING"
        else:
            assignments = ", ".join(f"{name} = ?" for name in names)
            sql = f"UPDATE {table.name} SET {assignments} WHERE {table.c[extra].name} = ?"  # noqa: S608
        ordered = (*columns, extra) if kind == "update" else columns
        processors = [_remembering(table, name, dialect) for name in ordered]
        found = _STATEMENTS[key] = (sql, processors)
    return cast(tuple[str, list[Any]], found)


def _remembering(table: Table, name: str, dialect: Dialect) -> Any:
    """The column's bind processor; for instants and amounts, one that remembers its last
    few thousand answers (a batch writes the same instant, `now`, on every row)."""
    column_type = table.c[name].type
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    if process is not None and isinstance(column_type, UTCDateTime | Amount):
        return functools.lru_cache(maxsize=4096)(process)
    return process


def _driver_many(
    session: Session,
    sql: str,
    processors: list[Any],
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
) -> int:
    """The rows' `columns` (in the statement's order) through the driver's executemany,
    converted column by column: a comprehension per column costs a fraction of a generator
    per row."""
    values: list[list[Any]] = []
    for name, process in zip(columns, processors, strict=True):
        column = [row[name] for row in rows]
        if process is not None:
            column = [None if value is None else process(value) for value in column]
        values.append(column)
    result = session.connection().exec_driver_sql(sql, list(zip(*values, strict=True)))
    return cast(CursorResult[Any], result).rowcount


def _one_by_one(session: Session, statement: Any, rows: Sequence[Mapping[str, Any]]) -> Any:
    return session.execute(statement, rows[0] if len(rows) == 1 else list(rows))


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    statement: Any = None,
    conflict: str | None = None,
) -> int:
    """Insert the rows (each with the same keys); returns how many were inserted.

    `statement` is the executemany form (an insert of `table`, with ON CONFLICT (`conflict`)
    DO NOTHING when `conflict` is given, whose duplicates are then skipped).
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect
    columns = tuple(rows[0])
    if dialect.name == "sqlite":
        sql, processors = _driver_statement(table, "insert", columns, conflict or "", dialect)
        return _driver_many(session, sql, processors, columns, rows)
    if len(rows) == 1:
        single = statement if statement is not None else table.insert()
        return cast(CursorResult[Any], _one_by_one(session, single, rows)).rowcount
    sql, processors = _unnest_insert(table, columns, conflict, None, dialect)
    cursor = _binary(session, sql, _params(columns, processors, rows))
    return int(cursor.rowcount)


def insert_returning(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    statement: Any,
    conflict: str,
    returning: str,
) -> set[Any]:
    """Insert the rows, skipping those whose `conflict` column exists; returns the
    `returning` column of those inserted. `statement` is the executemany form."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite" and returning == conflict:
        # the one writer holds the database from BEGIN: what is not there now is inserted
        wanted = list(dict.fromkeys(row[conflict] for row in rows))
        column = table.c[conflict]
        present: set[Any] = set()
        query = select(column).where(keys_in(column, "keys"))  # text keys: event, callback ids
        for index in range(0, len(wanted), 500):
            chunk = wanted[index : index + 500]
            present.update(session.connection().execute(query, {"keys": chunk}).scalars())
        fresh = [row for row in rows if row[conflict] not in present]
        insert_rows(session, table, fresh, conflict=conflict)
        return {row[conflict] for row in fresh}
    if dialect.name != "postgresql" or len(rows) == 1:
        return set(_one_by_one(session, statement, rows).scalars())
    columns = tuple(rows[0])
    sql, processors = _unnest_insert(table, columns, conflict, returning, dialect)
    cursor = _binary(session, sql, _params(columns, processors, rows))
    return {row[0] for row in cursor.fetchall()}


@functools.cache
def row_tuple(table: Table) -> Any:
    """A named tuple of the table's columns in order, for rows of `select(table)`: read by
    name, a Row's attribute costs several times a tuple's, and composing a state or a record
    reads most of a row's columns."""
    return collections.namedtuple(f"{table.name}_row", [column.key for column in table.c])


def update_rows(
    session: Session,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Set each row's columns on the table's row whose `key` column equals the row's `key`
    (every row with the same columns)."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    columns = tuple(name for name in rows[0] if name != key)
    if dialect.name == "sqlite":
        sql, processors = _driver_statement(table, "update", columns, key, dialect)
        _driver_many(session, sql, processors, (*columns, key), rows)
        return
    sql, processors = _unnest_update(table, key, columns, dialect)
    _binary(session, sql, _params((key, *columns), processors, rows))
