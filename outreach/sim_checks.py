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
- no message handed to the provider twice.

From the policy they take only facts: the candidate zones of a borrower (`candidate_zones`,
as SPEC §5 defines them), the contact window and the caps that apply to the borrower.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from outreach import policy as pol
from outreach.domain import Address, BorrowerState, Channel, Purpose

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
STOPPING = frozenset({"cease_contact", "bankruptcy", "deceased", "attorney"})
OPT_OUT_PROVIDER_CODES = frozenset({"21610"})
MAX_EXAMPLES = 20


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
        window = pol.contact_rules(policy, borrower).contact_window
        result.checked += 1
        for zone in pol.candidate_zones(policy, borrower):
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
        for rule in pol.contact_rules(policy, borrower).caps:
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


def _opt_outs(
    book: Book, messages: Sequence[dict[str, Any]]
) -> dict[str, list[tuple[dt.datetime, bool]]]:
    """Per phone number, when it opted out (True) or back in (False), in order."""
    from outreach.service.inbound import OPT_IN, OPT_OUT, classify

    changes: dict[str, list[tuple[dt.datetime, bool]]] = defaultdict(list)
    for at, event in book.of_type("sms.inbound"):
        data = event["data"]
        body = str(data.get("body", ""))
        word = _normalised(body)
        kind = classify(body)
        if word in OPT_OUT_WORDS or kind == OPT_OUT:
            changes[data["from"]].append((at, True))
        elif word in OPT_IN_WORDS or kind == OPT_IN:
            changes[data["from"]].append((at, False))
    # the provider saying the number unsubscribed (21610) opts it out as well
    for record in messages:
        if record.get("channel") != Channel.SMS or not record.get("to"):
            continue
        for step in record.get("events") or ():
            detail = step.get("detail") or ""
            if any(f"code={code}" in detail for code in OPT_OUT_PROVIDER_CODES):
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


def run_checks(
    policy: pol.Policy, events: Iterable[dict[str, Any]], messages: Sequence[dict[str, Any]]
) -> list[CheckResult]:
    """Every check, on the input book and the MESSAGES.jsonl records."""
    book = Book(events)
    sent = sent_messages(messages)
    return [
        check_contact_window(policy, book, sent),
        check_caps(policy, book, sent),
        check_after_payment(book, sent),
        check_after_opt_out(book, sent, messages),
        check_after_restriction(book, sent),
        check_sent_once(messages),
    ]
