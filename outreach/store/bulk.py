"""Many rows into one table in one statement.

On PostgreSQL the rows go in as one array per column (`INSERT … SELECT … FROM unnest(…)`): one
short statement, the same text whatever the number of rows, where an executemany costs a
round of the driver's work per row and a multi-row VALUES a statement the driver must parse
anew for every batch size. Rows are inserted in the order given (so serial ids follow it).
Elsewhere (SQLite) it is the driver's executemany.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Dialect, Table, text
from sqlalchemy.orm import Session

_STATEMENTS: dict[tuple[str, tuple[str, ...], str | None], tuple[Any, list[Any]]] = {}


def _unnest_insert(
    table: Table, columns: tuple[str, ...], conflict: str | None, dialect: Dialect
) -> tuple[Any, list[Any]]:
    """The statement and each column's bind processor, built once per shape."""
    key = (table.name, columns, conflict)
    found = _STATEMENTS.get(key)
    if found is None:
        arrays = ", ".join(
            f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in columns
        )
        names = ", ".join(columns)
        # every name is one of the table's own columns (table.c[name] above refuses others)
        sql = (
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest({arrays}) "  # noqa: S608
            f"WITH ORDINALITY AS rows ({names}, position) ORDER BY position"
        )
        if conflict is not None:
            sql += f" ON CONFLICT ({conflict}) DO NOTHING"
        processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
        ]
        found = _STATEMENTS[key] = (text(sql), processors)
    return found


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    statement: Any = None,
    conflict: str | None = None,
) -> int:
    """Insert the rows (each with the same keys); returns how many were inserted.

    `statement` is the executemany form (an insert of `table`, with `conflict`'s ON CONFLICT
    DO NOTHING when given); `conflict` names the unique column whose duplicates are skipped.
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql" or len(rows) == 1:
        single = statement if statement is not None else table.insert()
        result = session.execute(single, rows[0] if len(rows) == 1 else list(rows))
        return cast(CursorResult[Any], result).rowcount
    columns = tuple(rows[0])
    sql, processors = _unnest_insert(table, columns, conflict, dialect)
    params: dict[str, list[Any]] = {}
    for name, process in zip(columns, processors, strict=True):
        values = [row[name] for row in rows]
        params[name] = [_processed(process, value) for value in values] if process else values
    result = session.connection().execute(sql, params)
    return cast(CursorResult[Any], result).rowcount


def _processed(process: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else process(value)
