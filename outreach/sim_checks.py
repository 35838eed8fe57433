"""Compliance checks computed from a simulation's output: MESSAGES.jsonl and the input book.

They read what was actually handed to the provider (`sent_at`) and what the loan system and
the borrowers said (the events), and hold it against SPEC §5 without going through the
planning or gating code that produced it:

- every message sent inside the contact window in *every* candidate zone of its borrower
  (direct replies, which answer the borrower at once, excepted);
- no frequency cap exceeded over any rolling window, exempt purposes excepted;
- nothing about a loan sent once it was paid in full or closed, but its payment confirmation;
- nothing sent to a number after it opted out, but one confirmation (and answers to what the
  borrower writes later: HELP, START);
- nothing sent after a restriction: cease_contact (one confirmation), bankruptcy, deceased,
  attorney stop everything; an open dispute stops collection messages;
- no message handed to the provider twice;
- campaign messages (held to every rule above like any other) sent only between their
  campaign's launch and start and its end, one per borrower, and none left waiting once the
  campaign has ended.

- every borrower the policy should reach by text in the first three days of a delinquency
  was reached then, or has a message on the record saying why not (liveness: a rule that
  silently drops messages breaks nothing above).

They are a second opinion, so they derive what they judge by on their own: a borrower's
candidate zones from the explicit zone, a table of their own of where each zone is, and
libphonenumber asked directly; the window and caps from the policy's own figures and its
jurisdictions; what a reply asks for from a keyword and phrase table of their own. From the
policy they take only figures: windows, caps, the cadence steps and tags.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezone

from outreach import policy as pol
from outreach.channels.base import ErrorEffect
from outreach.channels.twilio_errors import effect_of
from outreach.domain import Address, BorrowerState, Channel, Purpose
from outreach.policy.model import CapRule, DailyWindow

# SPEC §5: a direct reply goes out at once, even in quiet hours, and counts against no cap;
# a payment confirmation obeys quiet hours but no cap.
DIRECT_REPLIES = frozenset({"optout_confirmation", "optin_confirmation", "help_reply"})
CAP_EXEMPT = DIRECT_REPLIES | {"payment_confirmation"}
COLLECTION = frozenset(
    {
        "dunning",
        "promise_reminder",
        "broken_promise",
        "instalment_reminder",
        "visit_notice",
        "campaign",
    }
)
# SPEC §7: the STOP family, and what opts back in.
OPT_OUT_WORDS = frozenset(
    {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "退订",
        "TD",
        "T",
    }
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
# Plain requests to stop, found anywhere in a reply (after NFKC and lower-casing).
OPT_OUT_PHRASES = (
    "stop texting",
    "stop messaging",
    "stop contacting",
    "stop sending",
    "stop calling",
    "don't text me",
    "dont text me",
    "do not text me",
    "do not contact me",
    "don't contact me",
    "never text me",
    "leave me alone",
    "remove me",
    "take me off",
    "unsubscribe",
    "opt me out",
    "no more texts",
    "no more messages",
    "退订",
    "退訂",
    "取消订阅",
    "取消訂閱",
    "不要再发",
    "不要再發",
    "别再发",
    "別再發",
    "请勿再发",
    "請勿再發",
    "停止发送",
    "停止發送",
    "不要再联系",
    "不要再聯繫",
    "别再联系",
    "別再聯繫",
)
# Where each zone is, written by zone ("zone: country-regions"): a country listed here is in
# these zones only, a region in the zones that list it; any other country is in every zone
# the tz database gives it. Postal codes are not looked at: a region spanning two zones must
# suit both, which is stricter than the service (it may narrow by postal code), never laxer.
ZONE_PLACES = """
Asia/Shanghai: CN
Asia/Taipei: TW
Asia/Hong_Kong: HK
Asia/Macau: MO
Asia/Tokyo: JP
Asia/Seoul: KR
Asia/Singapore: SG
America/New_York: US-CT DC DE FL GA IN KY MA MD ME MI NC NH NJ NY OH PA RI SC TN VA VT WV
America/Chicago: US-AL AR FL IA IL IN KS KY LA MI MN MO MS ND NE OK SD TN TX WI
America/Denver: US-AZ CO ID KS MT ND NE NM NV OR SD TX UT WY
America/Phoenix: US-AZ
America/Los_Angeles: US-CA ID NV OR WA
America/Anchorage: US-AK
America/Adak: US-AK
Pacific/Honolulu: US-HI
"""
# libphonenumber: only a number of these types places its holder (and only with three zones
# or fewer): toll-free, VoIP, premium and the like say nothing about where anyone is
PLACED_NUMBER_TYPES = frozenset(
    {PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
)
STOPPING = frozenset({"cease_contact", "bankruptcy", "deceased", "attorney"})
MAX_EXAMPLES = 20
# SPEC §10: a campaign line without an id names its campaign after its line
CAMPAIGN_LAUNCHED = "campaign.launched"
NOT_FINAL = frozenset({"scheduled", "deferred", "queued", "sending"})


@dataclass(frozen=True)
class CampaignWindow:
    """When a campaign's messages may be handed over: from its launch and its start, until
    its end (if it has one)."""

    launched_at: dt.datetime
    start_at: dt.datetime
    end_at: dt.datetime | None

    @property
    def opens(self) -> dt.datetime:
        return max(self.launched_at, self.start_at)


@functools.cache
def _zone_places() -> tuple[dict[str, list[str]], dict[tuple[str, str], list[str]]]:
    """ZONE_PLACES read: the zones of each country, and of each (country, region)."""
    by_country: dict[str, list[str]] = defaultdict(list)
    by_region: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in ZONE_PLACES.strip().splitlines():
        zone, _, places = line.partition(":")
        first, *more = places.split()
        country, _, region = first.partition("-")
        by_country[country].append(zone)
        for code in [region, *more] if region else []:
            by_region[(country, code)].append(zone)
    return dict(by_country), dict(by_region)


@functools.cache
def _tz_database_zones(country: str) -> tuple[str, ...]:
    """Every zone the tz database's zone1970.tab places in `country`."""
    from importlib import resources

    table = resources.files("tzdata").joinpath("zoneinfo", "zone1970.tab").read_text("utf-8")
    zones = []
    for line in table.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        codes, _, zone, *_ = line.split("\t")
        if country in codes.split(","):
            zones.append(zone)
    return tuple(zones)


def address_zone_names(address: Address) -> list[str]:
    country = (address.country or "").strip().upper()
    if not country:
        return []
    by_country, by_region = _zone_places()
    region = (address.region or "").strip().upper().removeprefix(f"{country}-")
    if (country, region) in by_region:
        return by_region[(country, region)]
    if country in by_country:
        return by_country[country]
    return list(_tz_database_zones(country))


def phone_zone_names(number: str) -> list[str]:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return []
    if not phonenumbers.is_valid_number(parsed):
        return []
    if phonenumbers.number_type(parsed) not in PLACED_NUMBER_TYPES:
        return []
    zones = [z for z in phone_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return zones if len(zones) <= 3 else []


def zones_of(policy: pol.Policy, borrower: BorrowerState) -> list[ZoneInfo]:
    """Every zone the borrower may be in (SPEC §5), derived here and not by the service."""
    names = [borrower.timezone.strip()] if borrower.timezone else []
    if borrower.address is not None:
        names += address_zone_names(borrower.address)
    for phone in borrower.phones:
        names += phone_zone_names(phone)
    zones = []
    for name in dict.fromkeys(names):
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return zones or [policy.default_zone]


def rules_of(policy: pol.Policy, borrower: BorrowerState) -> tuple[DailyWindow, list[CapRule]]:
    """The window and caps for the borrower: the policy's, then its country's jurisdiction,
    then its region's, each replacing what it names."""
    window = policy.contact_window
    caps = {rule.name: rule for rule in policy.caps}
    address = borrower.address
    country = (address.country or "").strip().upper() if address is not None else ""
    region = (address.region or "").strip().upper() if address is not None else ""
    codes = [country, f"{country}-{region.removeprefix(country + '-')}"] if country else []
    for code in codes:
        override = policy.jurisdictions.get(code)
        if override is None:
            continue
        window = override.contact_window or window
        for name, limit in override.caps.items():
            caps[name] = CapRule.named(name, limit)
    return window, list(caps.values())


def reply_kind(body: str) -> str:
    """`opt_out`, `opt_in` or `other`: what a borrower's reply asks for."""
    text = unicodedata.normalize("NFKC", body).strip()
    word = _normalised(text)
    if word in OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    lowered = text.lower().replace("’", "'")
    if any(phrase in lowered for phrase in OPT_OUT_PHRASES):
        return "opt_out"
    return "other"


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass
class CheckResult:
    name: str
    description: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0

    @property
    def passed(self) -> bool:
        return self.violation_count == 0

    def fail(self, text: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_EXAMPLES:
            self.violations.append(text)


@dataclass(frozen=True)
class Sent:
    """A message as handed to the provider."""

    id: str
    purpose: str
    borrower_id: str
    loan_id: str | None
    channel: str
    to: str | None
    at: dt.datetime

    def describe(self) -> str:
        return (
            f"{self.id} ({self.purpose}, {self.channel} to {self.to}, borrower {self.borrower_id},"
            f" sent {self.at.isoformat()})"
        )


def sent_messages(messages: Iterable[dict[str, Any]]) -> list[Sent]:
    sent = [
        Sent(
            id=record["id"],
            purpose=record["purpose"],
            borrower_id=record["borrower_id"],
            loan_id=record.get("loan_id"),
            channel=record["channel"],
            to=record.get("to"),
            at=parse_time(record["sent_at"]),
        )
        for record in messages
        if record.get("sent_at")
    ]
    sent.sort(key=lambda message: (message.at, message.id))
    return sent


class Book:
    """What the input events say, as of any instant."""

    def __init__(self, events: Iterable[dict[str, Any]]) -> None:
        ordered = sorted(
            (
                (parse_time(event["occurred_at"]), index, event)
                for index, event in enumerate(events)
            ),
            key=lambda item: (item[0], item[1]),
        )
        self.events = [(at, event) for at, _, event in ordered]
        self._borrowers: dict[str, list[tuple[dt.datetime, BorrowerState]]] = defaultdict(list)
        self.phone_owner: dict[str, str] = {}
        # by campaign id: a line without an id is named by its place (the events given in
        # the order of the file's lines, a line each)
        self.campaigns: dict[str, CampaignWindow] = {}
        for at, index, event in ordered:
            if event.get("type") == CAMPAIGN_LAUNCHED:
                data = event["data"]
                self.campaigns[event.get("id") or f"cmp_line{index + 1}"] = CampaignWindow(
                    at,
                    parse_time(data["start_at"]),
                    parse_time(data["end_at"]) if data.get("end_at") else None,
                )
        for at, event in self.events:
            if event.get("type") == "borrower.upserted":
                state = borrower_from(event["data"]["borrower"])
                self._borrowers[state.id].append((at, state))
                for phone in state.phones:
                    self.phone_owner.setdefault(phone, state.id)

    def events_as_dicts(self) -> list[dict[str, Any]]:
        return [event for _, event in self.events]

    def borrower(self, borrower_id: str, at: dt.datetime) -> BorrowerState | None:
        """The borrower as last described by `at` (the first description if none was yet)."""
        versions = self._borrowers.get(borrower_id)
        if not versions:
            return None
        current = versions[0][1]
        for since, state in versions:
            if since > at:
                break
            current = state
        return current

    def of_type(self, *types: str) -> Iterator[tuple[dt.datetime, dict[str, Any]]]:
        for at, event in self.events:
            if event.get("type") in types:
                yield at, event


def borrower_from(data: dict[str, Any]) -> BorrowerState:
    address = data.get("address")
    consent = data.get("consent") or {}
    return BorrowerState(
        id=data["id"],
        name=data.get("name", ""),
        locale=data.get("locale", ""),
        phones=tuple(data.get("phones") or ()),
        email=data.get("email"),
        timezone=data.get("timezone"),
        address=Address(
            address.get("country", "").upper() or None,
            address.get("region"),
            address.get("city"),
            address.get("postal_code"),
        )
        if address
        else None,
        consent_sms=bool(consent.get("sms")),
        consent_email=bool(consent.get("email")),
        tags=frozenset(data.get("tags") or ()),
    )


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def _normalised(body: str) -> str:
    return body.strip().strip(".!?。！？").strip().upper()


# -- the checks -------------------------------------------------------------------------------


def check_contact_window(policy: pol.Policy, book: Book, sent: Sequence[Sent]) -> CheckResult:
    result = CheckResult(
        "contact_window",
        "sent inside the contact window in every candidate zone of the borrower",
    )
    for message in sent:
        if message.purpose in DIRECT_REPLIES:
            continue
        borrower = book.borrower(message.borrower_id, message.at)
        if borrower is None:
            result.fail(f"{message.describe()}: borrower unknown to the book")
            continue
        window, _ = rules_of(policy, borrower)
        result.checked += 1
        for zone in zones_of(policy, borrower):
            local = message.at.astimezone(zone)
            if not window.start <= local.time().replace(tzinfo=None) < window.end:
                result.fail(
                    f"{message.describe()}: {local:%H:%M} in {zone.key}, outside "
                    f"{window.start:%H:%M}–{window.end:%H:%M}"
                )
    return result


def check_caps(policy: pol.Policy, book: Book, sent: Sequence[Sent]) -> CheckResult:
    result = CheckResult("frequency_caps", "no frequency cap exceeded over any rolling window")
    by_borrower: dict[str, list[Sent]] = defaultdict(list)
    for message in sent:
        if message.purpose not in CAP_EXEMPT:
            by_borrower[message.borrower_id].append(message)
            result.checked += 1
    for borrower_id, messages in by_borrower.items():
        borrower = book.borrower(borrower_id, messages[-1].at)
        if borrower is None:
            continue
        for rule in rules_of(policy, borrower)[1]:
            counted = [m for m in messages if rule.channel is None or m.channel == rule.channel]
            for index, first in enumerate(counted):
                inside = [m for m in counted[index:] if m.at - first.at < rule.window]
                if len(inside) > rule.limit:
                    result.fail(
                        f"borrower {borrower_id}: {len(inside)} messages within {rule.window} "
                        f"from {first.at.isoformat()} (cap {rule.name}={rule.limit}): "
                        + ", ".join(m.id for m in inside)
                    )
                    break
    return result


def check_after_payment(book: Book, sent: Sequence[Sent]) -> CheckResult:
    result = CheckResult(
        "after_payment",
        "nothing about a loan sent once paid in full or closed (but its payment confirmation)",
    )
    # per loan: (from, until) stretches in which nothing is owed
    settled: dict[str, list[list[dt.datetime | None]]] = defaultdict(list)
    closed: dict[str, dt.datetime] = {}

    def mark(loan_id: str, at: dt.datetime, owed: bool) -> None:
        stretches = settled[loan_id]
        open_stretch = stretches[-1] if stretches and stretches[-1][1] is None else None
        if not owed and open_stretch is None:
            stretches.append([at, None])
        elif owed and open_stretch is not None:
            open_stretch[1] = at

    for at, event in book.of_type("payment.received", "loan.updated", "loan.closed"):
        data = event["data"]
        if event["type"] == "payment.received":
            if _amount(data["amount_due_after"]) <= 0:
                mark(data["loan_id"], at, owed=False)
        elif event["type"] == "loan.updated":
            loan = data["loan"]
            if loan["id"] not in closed:
                mark(loan["id"], at, owed=_amount(loan["amount_due"]) > 0)
        else:
            closed.setdefault(data["loan_id"], at)
    for message in sent:
        if message.loan_id is None or message.purpose == Purpose.PAYMENT_CONFIRMATION:
            continue
        stretches = settled.get(message.loan_id, [])
        closed_at = closed.get(message.loan_id)
        if stretches or closed_at:
            result.checked += 1
        if closed_at is not None and message.at >= closed_at:
            result.fail(f"{message.describe()}: loan closed at {closed_at.isoformat()}")
            continue
        for since, until in stretches:
            assert since is not None
            if since <= message.at and (until is None or message.at < until):
                result.fail(f"{message.describe()}: loan paid in full at {since.isoformat()}")
                break
    return result


def _provider_code(detail: str) -> str | None:
    """The provider error code a timeline step's detail names (`code=21610`), if any."""
    for word in detail.split():
        if word.startswith("code="):
            return word.removeprefix("code=")
    return None


def _opt_outs(
    book: Book, messages: Sequence[dict[str, Any]]
) -> dict[str, list[tuple[dt.datetime, bool]]]:
    """Per phone number, when it opted out (True) or back in (False), in order."""
    changes: dict[str, list[tuple[dt.datetime, bool]]] = defaultdict(list)
    for at, event in book.of_type("sms.inbound"):
        data = event["data"]
        kind = reply_kind(str(data.get("body", "")))
        if kind != "other":
            changes[data["from"]].append((at, kind == "opt_out"))
    # the provider saying the number unsubscribed (Twilio's 21610) opts it out as well
    for record in messages:
        if record.get("channel") != Channel.SMS or not record.get("to"):
            continue
        for step in record.get("events") or ():
            detail = step.get("detail") or ""
            if effect_of(_provider_code(detail)) is ErrorEffect.OPT_OUT:
                changes[record["to"]].append((parse_time(step["at"]), True))
    for history in changes.values():
        history.sort(key=lambda change: change[0])
    return changes


def check_after_opt_out(
    book: Book, sent: Sequence[Sent], messages: Sequence[dict[str, Any]]
) -> CheckResult:
    result = CheckResult(
        "after_opt_out",
        "nothing sent to a number after it opted out, but one confirmation",
    )
    changes = _opt_outs(book, messages)
    confirmations: dict[tuple[str, dt.datetime], int] = defaultdict(int)
    for message in sent:
        if message.channel != Channel.SMS or message.to not in changes:
            continue
        opted_out_at = None
        for at, opted_out in changes[message.to]:
            if at > message.at:
                break
            opted_out_at = at if opted_out else None
        if opted_out_at is None:
            continue
        result.checked += 1
        if message.purpose == Purpose.OPTOUT_CONFIRMATION:
            confirmations[(message.to, opted_out_at)] += 1
            if confirmations[(message.to, opted_out_at)] > 1:
                result.fail(f"{message.describe()}: a second opt-out confirmation")
        elif message.purpose not in DIRECT_REPLIES:
            result.fail(
                f"{message.describe()}: {message.to} opted out at {opted_out_at.isoformat()}"
            )
    return result


def check_after_restriction(book: Book, sent: Sequence[Sent]) -> CheckResult:
    result = CheckResult(
        "after_restriction",
        "nothing sent after cease_contact (but one confirmation), bankruptcy, deceased or "
        "attorney; no collection message during a dispute",
    )
    history: dict[str, list[tuple[dt.datetime, str, bool]]] = defaultdict(list)
    for at, event in book.of_type("contact.restricted"):
        data = event["data"]
        history[data["borrower_id"]].append((at, data["restriction"], bool(data["active"])))
    confirmations: dict[str, int] = defaultdict(int)
    for message in sent:
        changes = history.get(message.borrower_id)
        if not changes:
            continue
        active: dict[str, dt.datetime] = {}
        for at, restriction, is_active in changes:
            if at > message.at:
                break
            if is_active:
                active.setdefault(restriction, at)
            else:
                active.pop(restriction, None)
        if not active or message.purpose in DIRECT_REPLIES:
            continue
        result.checked += 1
        stopping = sorted(set(active) & STOPPING)
        if message.purpose == Purpose.CEASE_CONFIRMATION and stopping == ["cease_contact"]:
            confirmations[message.borrower_id] += 1
            if confirmations[message.borrower_id] > 1:
                result.fail(f"{message.describe()}: a second cease-contact confirmation")
            continue
        if stopping:
            result.fail(
                f"{message.describe()}: {', '.join(stopping)} since "
                f"{min(active[r] for r in stopping).isoformat()}"
            )
        elif "dispute" in active and message.purpose in COLLECTION:
            result.fail(f"{message.describe()}: dispute open since {active['dispute'].isoformat()}")
    return result


def check_sent_once(messages: Sequence[dict[str, Any]]) -> CheckResult:
    result = CheckResult("sent_once", "no message handed to the provider twice")
    for record in messages:
        accepted = [step for step in record.get("events") or () if step.get("status") == "sent"]
        if record.get("sent_at"):
            result.checked += 1
        if len(accepted) > 1:
            result.fail(f"{record['id']}: accepted by the provider {len(accepted)} times")
    return result


def check_campaign_window(
    book: Book, messages: Sequence[dict[str, Any]], until: dt.datetime | None = None
) -> CheckResult:
    result = CheckResult(
        "campaign_window",
        "campaign messages sent only from their campaign's launch and start to its end, one "
        "per borrower, none still waiting after the end",
    )
    end = until or _last_step(messages)
    first_of: dict[tuple[str, str], str] = {}
    for record in messages:
        if record.get("purpose") != Purpose.CAMPAIGN:
            continue
        result.checked += 1
        campaign_id = str(record.get("campaign_id") or "")
        window = book.campaigns.get(campaign_id)
        if window is None:
            result.fail(
                f"{record['id']}: campaign {campaign_id or None!r} is not launched by the book"
            )
            continue
        key = (campaign_id, record["borrower_id"])
        first = first_of.setdefault(key, record["id"])
        if first != record["id"]:
            result.fail(
                f"{record['id']}: a second message of campaign {campaign_id} to borrower "
                f"{record['borrower_id']} (the first: {first})"
            )
        if record.get("sent_at"):
            at = parse_time(record["sent_at"])
            if at < window.opens:
                result.fail(
                    f"{record['id']}: sent {at.isoformat()}, before campaign {campaign_id} "
                    f"opened at {window.opens.isoformat()}"
                )
            elif window.end_at is not None and at >= window.end_at:
                result.fail(
                    f"{record['id']}: sent {at.isoformat()}, once campaign {campaign_id} had "
                    f"ended at {window.end_at.isoformat()}"
                )
        elif (
            record["status"] in NOT_FINAL
            and window.end_at is not None
            and end is not None
            and window.end_at <= end
        ):
            result.fail(
                f"{record['id']}: still {record['status']} at the end of the run, after "
                f"campaign {campaign_id} ended at {window.end_at.isoformat()}"
            )
    return result


def _last_step(messages: Sequence[dict[str, Any]]) -> dt.datetime | None:
    return max(
        (parse_time(step["at"]) for m in messages for step in m.get("events") or ()),
        default=None,
    )


# SPEC §5/§6: final outcomes that say why a message did not go, and deferrals that can hold
# one for days (quiet hours alone cannot: every day has allowed hours, or the message is
# suppressed as no_convenient_time)
WITHHELD = frozenset({"suppressed", "cancelled", "failed"})
LONG_DEFERRALS = frozenset({"frequency_cap", "holiday", "inconvenient_time", "event_pending"})
FIRST_CONTACT_DAYS = 3


def _texts_in_first_days(policy: pol.Policy, borrower: BorrowerState) -> bool:
    """Whether the policy's cadence for this borrower has a text in days 1-3 past due."""
    for days_past_due in range(1, FIRST_CONTACT_DAYS + 1):
        stage = policy.stage_at(days_past_due)
        if stage is None:
            continue
        steps = stage.steps
        for tag in policy.cadence_tags:
            if tag in borrower.tags and tag in stage.tag_steps:
                steps = stage.tag_steps[tag]
                break
        if any(s.days_past_due == days_past_due and s.channel is Channel.SMS for s in steps):
            return True
    return False


def _events_by_loan(book: Book) -> dict[str, list[tuple[dt.datetime, dict[str, Any]]]]:
    """The book's events about each loan, in order (read once, not once per loan)."""
    by_loan: dict[str, list[tuple[dt.datetime, dict[str, Any]]]] = defaultdict(list)
    for at, event in book.events:
        data = event.get("data") or {}
        loan_id = data["loan"]["id"] if event.get("type") == "loan.updated" else data.get("loan_id")
        if loan_id is not None:
            by_loan[str(loan_id)].append((at, event))
    return by_loan


def _settled_or_paused(
    events: Sequence[tuple[dt.datetime, dict[str, Any]]], due_date: str, until: dt.datetime
) -> bool:
    """Whether, before `until`, the loan these events are about was paid, closed, brought
    current or moved to another due date, or a promise or plan paused its dunning: then no
    first text is owed."""
    for at, event in events:
        if at >= until:
            break
        data = event["data"]
        kind = event.get("type")
        if kind == "loan.updated":
            loan = data["loan"]
            if (
                loan["due_date"] != due_date
                or _amount(loan["amount_due"]) <= 0
                or int(loan["days_past_due"]) <= 0
            ):
                return True
            continue
        paused_or_closed = kind in ("loan.closed", "promise_to_pay.created", "payment_plan.created")
        paid_in_full = kind == "payment.received" and _amount(data.get("amount_due_after")) <= 0
        if paused_or_closed or paid_in_full:
            return True
    return False


def check_first_contact(
    policy: pol.Policy,
    book: Book,
    messages: Sequence[dict[str, Any]],
    until: dt.datetime | None = None,
) -> CheckResult:
    result = CheckResult(
        "first_contact",
        "every loan reported by its first day late got a text in days 1-3 (or a reason why "
        "not on the record), where the cadence has one and the borrower takes texts",
    )
    zone = policy.day_boundary_zone
    end = until or _last_step(messages)
    if end is None:
        return result
    texts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in messages:
        if record.get("purpose") == "dunning" and record.get("channel") == "sms":
            texts[str(record.get("loan_id"))].append(record)
    seen: set[tuple[str, str]] = set()
    about_loan = _events_by_loan(book)
    for at, event in book.of_type("loan.updated"):
        loan = event["data"]["loan"]
        cycle = (loan["id"], loan["due_date"])
        if cycle in seen or _amount(loan["amount_due"]) <= 0:
            continue
        day_one = dt.date.fromisoformat(loan["due_date"]) + dt.timedelta(days=1)
        opens = dt.datetime.combine(day_one, dt.time(), tzinfo=zone)
        closes = opens + dt.timedelta(days=FIRST_CONTACT_DAYS)
        if at >= opens + dt.timedelta(days=1) or closes > end:
            continue  # first reported after its first day late, or the run ends too soon
        seen.add(cycle)
        borrower = book.borrower(loan["borrower_id"], opens + dt.timedelta(days=1))
        if borrower is None or not borrower.phones or not borrower.consent_sms:
            continue
        if not _texts_in_first_days(policy, borrower):
            continue
        if _settled_or_paused(about_loan[loan["id"]], loan["due_date"], closes):
            continue
        result.checked += 1
        candidates = [
            m
            for m in texts.get(loan["id"], ())
            if m["events"] and parse_time(m["events"][0]["at"]) < closes
        ]
        reached = any(
            m.get("sent_at") and opens <= parse_time(m["sent_at"]) < closes for m in candidates
        )
        explained = any(
            m.get("status") in WITHHELD
            or any(
                step.get("status") == "deferred"
                and step.get("reason") in LONG_DEFERRALS
                and parse_time(step["at"]) < closes
                for step in m["events"]
            )
            for m in candidates
        )
        if not reached and not explained:
            result.fail(
                f"loan {loan['id']} (borrower {borrower.id}, late from {day_one}): no text "
                f"sent by {closes.astimezone(dt.UTC).isoformat()} and none withheld with a "
                f"reason ({len(candidates)} planned)"
            )
    return result


def run_checks(
    policy: pol.Policy,
    events: Iterable[dict[str, Any]],
    messages: Sequence[dict[str, Any]],
    *,
    until: dt.datetime | None = None,
) -> list[CheckResult]:
    """Every check, on the input book and the MESSAGES.jsonl records; `until`, the end of
    the simulated time (by default, the last step on any message's timeline)."""
    book = Book(events)
    sent = sent_messages(messages)
    return [
        check_contact_window(policy, book, sent),
        check_caps(policy, book, sent),
        check_after_payment(book, sent),
        check_after_opt_out(book, sent, messages),
        check_after_restriction(book, sent),
        check_sent_once(messages),
        check_first_contact(policy, book, messages, until),
        check_campaign_window(book, messages, until),
    ]
