"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

AMOUNT_SCALE = 10_000  # four decimal places, enough for every ISO 4217 currency


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores instants in UTC and always returns timezone-aware values (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # SQLite hands back the text its bind processor wrote, a UTC instant without an
        # offset: parsed with the offset in one step, it costs a tenth of parsing it naive
        # and then replacing its zone (a simulation reads instants by the million)
        fallback = super().result_processor(dialect, coltype)
        parse = dt.datetime.fromisoformat

        def process(value: Any) -> dt.datetime | None:
            if value is None:
                return None
            try:
                return parse(value + "+00:00")
            except (TypeError, ValueError):
                return fallback(value) if fallback is not None else value

        return process


class Amount(TypeDecorator[Decimal]):
    """Exact money: NUMERIC on PostgreSQL, scaled integers on SQLite (which has no decimal)."""

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value)
        if dialect.name == "sqlite":
            return int((value * AMOUNT_SCALE).to_integral_value())
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return _unscaled(int(value))
        return _without_trailing_zeros(Decimal(value))

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        unscaled = _unscaled

        # as process_result_value, without the decorator's layer around it
        def process(value: Any) -> Decimal | None:
            return None if value is None else unscaled(int(value))

        return process


@functools.lru_cache(maxsize=16384)
def _unscaled(value: int) -> Decimal:
    # the same amounts are read back again and again (a loan's amount due, each night)
    return _without_trailing_zeros(Decimal(value) / AMOUNT_SCALE)


def _without_trailing_zeros(value: Decimal) -> Decimal:
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normalized.quantize(Decimal(1))
    return normalized


JSONType = JSON().with_variant(JSONB(), "postgresql")
