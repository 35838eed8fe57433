"""The webhook path, stage 1 of 4: the loan system's events (SPEC §4) parsed and validated,
field by field, with an error naming the field. Next: `inbox` stores them."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import orjson
import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from outreach.domain import ClosedReason, Restriction
from outreach.errors import PermanentError
from outreach.policy.zones import parsed_number
from outreach.text import hidden_characters


class EventError(PermanentError):
    """Raised when an event is malformed; the message names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# What the store can hold, and a margin of sense: amounts are NUMERIC(18, 4) (scaled 64-bit
# integers on SQLite); a trillion in any currency is no loan this service will dun
MAX_AMOUNT = Decimal(10) ** 12
AMOUNT_QUANTUM = Decimal("0.0001")
MAX_DAYS_PAST_DUE = 36_500
# dates the policy adds days and weeks to without leaving the calendar
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2199, 12, 31)
MAX_NAME_LENGTH = 100


def _decimal_string(value: Any) -> Decimal:
    # JSON gives exactly str (or int): checked first, as every event carries amounts
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON has one kind of number: 120.0 is the integer 120
    if type(value) is not str and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise ValueError('must be a decimal string such as "120.50"')
    try:
        amount = Decimal(value if type(value) is str else str(value))
    except InvalidOperation:
        raise ValueError(f"'{value}' is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if abs(amount) > MAX_AMOUNT:
        raise ValueError(f"'{value}' is out of range (at most {MAX_AMOUNT:,} either way)")
    if amount != amount.quantize(AMOUNT_QUANTUM):
        raise ValueError(f"'{value}' has more than 4 decimal places")
    return amount


def _calendar_date(value: dt.date) -> dt.date:
    day = value.date() if isinstance(value, dt.datetime) else value
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise ValueError(
            f"'{value.isoformat()}' is out of range ({EARLIEST_DATE.year}-{LATEST_DATE.year})"
        )
    return value


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a UTC offset (RFC 3339), e.g. 2026-11-23T09:00:00Z")
    _calendar_date(value)
    return value.astimezone(dt.UTC)


_LINK = re.compile(
    r"[a-z][a-z0-9+.-]*://|\bwww\.|[\w.+-]+@[\w-]+\.[a-z]"
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|info|biz|io|co|cn|tw|hk|us|uk|me|ly"
    r"|xyz|top|site|online|link|click|app|example|shop|vip)\b",
    re.IGNORECASE,
)


def _person_name(value: str) -> str:
    """A name that goes into messages as written: one line of visible text, no links."""
    if not value.strip():
        raise ValueError("must not be blank")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"is longer than {MAX_NAME_LENGTH} characters")
    hidden = hidden_characters(value)
    if hidden:
        raise ValueError(
            f"contains U+{ord(hidden[0]):04X} (a control, line-break or bidi character)"
        )
    link = _LINK.search(value)
    if link:
        raise ValueError(f"must not contain a link or address ({link.group(0)!r})")
    return value


def _e164(value: str) -> str:
    parsed = parsed_number(value)
    if parsed is None or not value.startswith("+") or not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"'{value}' is not an E.164 phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone") from None
    return value


def _email(value: str) -> str:
    # a line break in an address is a header injected into the mail (`Bcc:` …), wherever it is
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain a line break (CR or LF)")
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise ValueError(f"'{value}' is not an email address")
    return address


def _identifier(value: str) -> str:
    # an id is a path segment of its pages and API routes (/ui/borrowers/{id}): with a `/` in it
    # they cannot be reached, even percent-encoded
    if "/" in value:
        raise ValueError("must not contain '/'")
    return value


def _text(value: Any) -> Any:
    # pydantic would read a number as unix seconds or days: times and dates are RFC 3339 text
    if not isinstance(value, str):
        raise ValueError("must be RFC 3339 text, e.g. 2026-11-23T09:00:00Z or 2026-11-23")
    return value


Money = Annotated[Decimal, BeforeValidator(_decimal_string)]
Instant = Annotated[dt.datetime, BeforeValidator(_text), AfterValidator(_aware)]
Phone = Annotated[str, AfterValidator(_e164)]
Zone = Annotated[str, AfterValidator(_zone)]
Email = Annotated[str, AfterValidator(_email)]
Identifier = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_identifier)]
CalendarDate = Annotated[dt.date, BeforeValidator(_text), AfterValidator(_calendar_date)]
ClockTime = Annotated[dt.time, BeforeValidator(_text)]
# true or false, not 0, 1, "yes" or "off" (which pydantic would read as one)
StrictFlag = Annotated[bool, Field(strict=True)]


def _not_flag(value: Any) -> Any:
    # pydantic would read true and false as 1 and 0
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


Whole = Annotated[int, BeforeValidator(_not_flag)]
PersonName = Annotated[str, AfterValidator(_person_name)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lenient(BaseModel):
    """Loan-system objects may grow fields; unknown ones are kept out of our state, not refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class AddressIn(Lenient):
    country: Annotated[str, Field(min_length=2, max_length=2)] | None = None
    region: Annotated[str, Field(max_length=100)] | None = None
    city: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[str, Field(max_length=20)] | None = None

    @field_validator("country")
    @classmethod
    def upper_country(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class ConsentIn(Lenient):
    sms: StrictFlag = False
    email: StrictFlag = False


class BorrowerIn(Lenient):
    id: Identifier
    name: PersonName
    locale: Annotated[str, Field(min_length=2, max_length=20)]
    phones: list[Phone] = Field(default_factory=list)
    email: Annotated[Email, Field(max_length=320)] | None = None
    timezone: Zone | None = None
    address: AddressIn | None = None
    consent: ConsentIn = ConsentIn()
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list)


class LoanIn(Lenient):
    id: Identifier
    borrower_id: Identifier
    product: Annotated[str, Field(min_length=1, max_length=100)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    amount_due: Money
    balance: Money
    days_past_due: Annotated[Whole, Field(ge=-MAX_DAYS_PAST_DUE, le=MAX_DAYS_PAST_DUE)]
    due_date: CalendarDate
    account_number: Annotated[str, Field(min_length=1, max_length=64)]


class BorrowerUpserted(Strict):
    borrower: BorrowerIn


class LoanUpdated(Strict):
    loan: LoanIn


class PaymentReceived(Lenient):
    loan_id: Identifier
    payment_id: Identifier
    amount: Money
    paid_at: Instant
    amount_due_after: Money


class PromiseCreated(Lenient):
    loan_id: Identifier
    promise_id: Identifier
    amount: Money
    promised_date: CalendarDate


class InstalmentIn(Lenient):
    due_date: CalendarDate
    amount: Money


class PlanCreated(Lenient):
    loan_id: Identifier
    plan_id: Identifier
    instalments: Annotated[list[InstalmentIn], Field(min_length=1, max_length=120)]


class VisitScheduled(Lenient):
    loan_id: Identifier
    visit_id: Identifier
    visit_at: Instant
    collector_name: PersonName
    collector_id: Identifier


class WindowIn(Lenient):
    start: ClockTime
    end: ClockTime
    days: list[Annotated[Whole, Field(ge=1, le=7)]] = Field(default_factory=list)


class ContactRestricted(Lenient):
    borrower_id: Identifier
    restriction: Restriction
    active: StrictFlag
    windows: list[WindowIn] | None = None


class LoanClosed(Lenient):
    loan_id: Identifier
    reason: ClosedReason


class SmsInbound(Lenient):
    """Only in simulation input: a borrower's reply, as the Twilio inbound webhook gives it."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    from_: Annotated[Phone, Field(alias="from")]
    body: str


DATA_MODELS: dict[str, type[BaseModel]] = {
    "borrower.upserted": BorrowerUpserted,
    "loan.updated": LoanUpdated,
    "payment.received": PaymentReceived,
    "promise_to_pay.created": PromiseCreated,
    "payment_plan.created": PlanCreated,
    "field_visit.scheduled": VisitScheduled,
    "contact.restricted": ContactRestricted,
    "loan.closed": LoanClosed,
}
SIMULATION_ONLY_MODELS: dict[str, type[BaseModel]] = {"sms.inbound": SmsInbound}
_SIMULATION_MODELS = {**DATA_MODELS, **SIMULATION_ONLY_MODELS}


class Envelope(Strict):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    type: str
    occurred_at: Instant
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: the envelope, its data model, and the document as received."""

    id: str
    type: str
    occurred_at: dt.datetime
    data: Any
    raw: dict[str, Any]
    # the loan and borrower the event is about, where it names them
    loan_id: str | None = field(init=False)
    borrower_id: str | None = field(init=False)

    def __post_init__(self) -> None:
        data = self.data
        loan_id: str | None
        borrower_id: str | None
        if isinstance(data, LoanUpdated):
            loan_id, borrower_id = data.loan.id, data.loan.borrower_id
        elif isinstance(data, BorrowerUpserted):
            loan_id, borrower_id = None, data.borrower.id
        else:
            loan_id = getattr(data, "loan_id", None)
            borrower_id = getattr(data, "borrower_id", None)
        object.__setattr__(self, "loan_id", loan_id)
        object.__setattr__(self, "borrower_id", borrower_id)


def _first_problem(error: ValidationError, prefix: str) -> EventError:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if part != "from_")
    path = f"{prefix}.{location}" if location else prefix
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if first["type"] == "missing":
        message = "is required"
    elif first["type"] == "extra_forbidden":
        message = "is not a known field"
    return EventError(path.strip("."), message)


def _nul_at(value: Any, path: str) -> str | None:
    """Where a NUL character is in the document (keys included), if anywhere: the inbox keeps
    the document as JSONB and PostgreSQL cannot store a NUL in text or JSONB."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return inner
            found = _nul_at(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def parse_event(raw: bytes | str | dict[str, Any], *, allow_simulation: bool = False) -> Event:
    """Parse and validate one event; raise EventError naming the first offending field."""
    if isinstance(raw, bytes | str):
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise EventError("body", f"not valid JSON ({error})") from None
    else:
        document = raw
    if not isinstance(document, dict):
        raise EventError("body", "must be a JSON object")
    # JSON text can carry a NUL only escaped; most documents need no walk
    if isinstance(raw, bytes):
        maybe_nul = b"\\u0000" in raw
    else:
        maybe_nul = not isinstance(raw, str) or "\\u0000" in raw
    nul = _nul_at(document, "") if maybe_nul else None
    if nul is not None:
        raise EventError(nul, "contains a NUL character (U+0000), which cannot be stored")
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as error:
        raise _first_problem(error, "") from None
    models = _SIMULATION_MODELS if allow_simulation else DATA_MODELS
    model = models.get(envelope.type)
    if model is None:
        known = ", ".join(sorted(models))
        raise EventError("type", f"unknown event type '{envelope.type}' (known: {known})")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as error:
        raise _first_problem(error, "data") from None
    return Event(
        id=envelope.id,
        type=envelope.type,
        occurred_at=envelope.occurred_at,
        data=data,
        raw=document,
    )
