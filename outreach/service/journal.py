"""The reply journal: borrower replies and delivery statuses kept in Redis while the database
cannot take them, applied to it in arrival order once it can.

Twilio does not retry its messaging webhooks, so a reply answered 503 is gone, and with it
an opt-out that Twilio's own keyword handling does not catch (退订, TD, "please stop texting
me"). A reply or status callback the database cannot store is therefore appended to a Redis
list before it is answered 200; the clock drains the list in order, one entry per
transaction, each removed only once its transaction committed. Applying an entry twice does
nothing the second time (inbound replies are unique by MessageSid, status callbacks by
sid, status and error code), so a drain interrupted anywhere repeats at worst. While the
list is not empty, new replies join its end instead of overtaking it: a START sent after a
journaled STOP is applied after it. And while a reply waits there, dispatch holds every SMS
to its number (`held_senders`): it may be a STOP.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import redis
from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.domain import Channel
from outreach.errors import StoreUnavailable, TransientError
from outreach.lua import lua_script
from outreach.service.delivery_status import PARKED, apply_parked, record_status
from outreach.service.inbound import handle_sms_reply
from outreach.store.borrowers import normalize_recipient
from outreach.store.db import transaction

log = logging.getLogger(__name__)

JOURNAL_KEY = "outreach:replies:journal"
# entries whose apply raised an error that retrying cannot cure, set aside for a person; their
# numbers stay held
SET_ASIDE_KEY = "outreach:replies:set_aside"
SMS_REPLY = "sms_reply"
TWILIO_STATUS = "twilio_status"
DRAIN_BATCH = 500

# the head is removed only if it is still the entry just applied: a second drainer that got
# there first makes the first one stop instead of applying out of order
_REMOVE_HEAD = lua_script("journal_remove_head")


class JournalUnavailable(TransientError):
    """Raised when the reply journal in Redis cannot be read or written."""


@dataclass(frozen=True)
class JournalEntry:
    """One callback as it reached us: its kind, its form fields, and when."""

    kind: str
    fields: Mapping[str, str]
    received_at: dt.datetime
    # tells apart two entries of the same content (compared when the head is removed)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "fields": dict(self.fields),
                "received_at": self.received_at.isoformat(),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> JournalEntry:
        document = orjson.loads(raw)
        return cls(
            kind=document["kind"],
            fields=document["fields"],
            received_at=dt.datetime.fromisoformat(document["received_at"]),
            id=document["id"],
        )


class ReplyJournal:
    """The Redis list of callbacks waiting for the database, oldest first."""

    def __init__(self, client: redis.Redis, key: str = JOURNAL_KEY) -> None:
        self.client = client
        self.key = key
        self.set_aside_key = SET_ASIDE_KEY if key == JOURNAL_KEY else f"{key}:set_aside"
        self._remove_head = client.register_script(_REMOVE_HEAD)

    def append(self, entry: JournalEntry) -> None:
        try:
            self.client.rpush(self.key, entry.encode())
        except redis.RedisError as error:
            raise JournalUnavailable(f"reply journal unavailable: {error}") from error

    def waiting(self) -> int:
        """How many entries wait to be applied."""
        try:
            return int(self.client.llen(self.key))
        except redis.RedisError as error:
            raise JournalUnavailable(f"reply journal unavailable: {error}") from error

    def set_aside(self) -> int:
        """How many entries were set aside as impossible to apply."""
        try:
            return int(self.client.llen(self.set_aside_key))
        except redis.RedisError as error:
            raise JournalUnavailable(f"reply journal unavailable: {error}") from error

    def head(self, limit: int) -> list[bytes]:
        try:
            entries = self.client.lrange(self.key, 0, limit - 1)
        except redis.RedisError as error:
            raise JournalUnavailable(f"reply journal unavailable: {error}") from error
        return [entry if isinstance(entry, bytes) else entry.encode() for entry in entries]

    def remove_head(self, raw: bytes, *, set_aside: bool = False) -> bool:
        """Remove `raw` if it is still the oldest entry (to the set-aside list with
        `set_aside`); False when it is not (another drainer took it)."""
        keys = [self.key, self.set_aside_key] if set_aside else [self.key]
        try:
            return bool(self._remove_head(keys=keys, args=[raw]))
        except redis.RedisError as error:
            raise JournalUnavailable(f"reply journal unavailable: {error}") from error

    def held_senders(self) -> HeldSenders:
        """The numbers with a reply not applied, waiting in the journal or set aside: SMS to
        them waits, since the reply may be a STOP."""
        try:
            with self.client.pipeline(transaction=False) as pipeline:
                pipeline.lrange(self.key, 0, -1)
                pipeline.lrange(self.set_aside_key, 0, -1)
                waiting, set_aside = pipeline.execute()
        except redis.RedisError as error:
            raise JournalUnavailable(f"reply journal unavailable: {error}") from error
        return HeldSenders(_senders(waiting), _senders(set_aside))


class HeldSenders(NamedTuple):
    """Numbers whose replies are not applied: `waiting` in the journal (applied within a
    tick or two of the database answering), or `set_aside` (until a person sees to them)."""

    waiting: frozenset[str]
    set_aside: frozenset[str]


def _senders(entries: list[bytes]) -> frozenset[str]:
    senders: set[str] = set()
    for raw in entries:
        try:
            document = orjson.loads(raw)
            if document["kind"] == SMS_REPLY:
                senders.add(normalize_recipient(Channel.SMS, document["fields"]["From"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue  # an entry no drain can read is set aside; it names no number
    return frozenset(senders)


def apply_entry(session: Session, policy: pol.Policy, entry: JournalEntry, now: dt.datetime) -> str:
    """Apply one callback as the webhook applies it when the database answers; returns its
    outcome (a reply's classification, a status callback's effect)."""
    fields = entry.fields
    if entry.kind == SMS_REPLY:
        outcome = handle_sms_reply(
            session,
            policy,
            sender=fields["From"],
            body=fields.get("Body", ""),
            provider_id=fields.get("MessageSid") or None,
            now=now,
            received_at=min(entry.received_at, now),
        )
        return "duplicate" if outcome.duplicate else outcome.classification
    if entry.kind == TWILIO_STATUS:
        return record_status(
            session,
            provider="twilio",
            provider_id=fields["MessageSid"],
            status=fields["MessageStatus"],
            error_code=fields.get("ErrorCode") or None,
            now=now,
        )
    raise ValueError(f"unknown journal entry kind {entry.kind!r}")


@dataclass
class ReplyIntake:
    """Where the provider webhooks hand a reply or status callback: the database at once
    when it answers and nothing is waiting before it, the journal otherwise."""

    journal: ReplyJournal
    sessions: sessionmaker[Session]
    policy: pol.Policy
    now: Callable[[], dt.datetime]

    def receive(self, entry: JournalEntry) -> str:
        """The callback's outcome once applied, or `journaled` once kept in the journal.
        Raises StoreUnavailable when neither the database nor the journal took it (the
        caller answers 503)."""
        try:
            behind = self.journal.waiting() > 0
        except JournalUnavailable:
            behind = False  # nothing can be journaled: the database is the only way left
        if not behind:
            try:
                with transaction(self.sessions) as session:
                    outcome = apply_entry(session, self.policy, entry, self.now())
            except StoreUnavailable as error:
                log.warning("database unavailable, journaling a %s: %s", entry.kind, error)
            else:
                self._claim_if_parked(entry, outcome)
                return outcome
        try:
            self.journal.append(entry)
        except JournalUnavailable as error:
            raise StoreUnavailable(f"neither the database nor the journal: {error}") from error
        return "journaled"

    def drain(self, limit: int = DRAIN_BATCH) -> int:
        """Apply the oldest journaled entries in order, each in its own transaction, each
        removed once committed; stops at the first the database does not take (tried again
        at the next call). Returns how many were applied or set aside."""
        done = 0
        for raw in self.journal.head(limit):
            set_aside = False
            try:
                entry = JournalEntry.decode(raw)
                with transaction(self.sessions) as session:
                    outcome = apply_entry(session, self.policy, entry, self.now())
            except TransientError as error:
                log.warning("reply journal waits for the database: %s", error)
                break
            except Exception:
                # retrying cannot cure it: kept aside for a person, its number still held.
                # Named by its ids, not its fields: those carry a phone number and a reply
                log.exception("journaled callback set aside: %s", _named(raw))
                set_aside = True
            if not self.journal.remove_head(raw, set_aside=set_aside):
                break
            if not set_aside:
                self._claim_if_parked(entry, outcome)
            done += 1
        return done

    def _claim_if_parked(self, entry: JournalEntry, outcome: str) -> None:
        """A status parked for want of its message: claimed at once if the worker's record
        of the acceptance committed meanwhile (see `delivery_status`); otherwise that record
        claims it, or the clock's sweep does."""
        if entry.kind != TWILIO_STATUS or outcome != PARKED:
            return
        try:
            apply_parked(self.sessions, [entry.fields["MessageSid"]], self.now())
        except StoreUnavailable as error:
            log.warning("a parked status waits for the clock's sweep: %s", error)


def _named(raw: bytes) -> str:
    """A journal entry by its kind and ids, for a log line (never its fields' values)."""
    try:
        document = orjson.loads(raw)
        sid = document.get("fields", {}).get("MessageSid")
        return f"{document.get('kind')} entry {document.get('id')} (MessageSid {sid})"
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return f"an entry of {len(raw)} bytes that is not JSON"
