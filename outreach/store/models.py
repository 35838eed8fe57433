"""SQLAlchemy models: borrower and loan state, the event inbox, the message outbox and log."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from outreach.store.types import Amount, JSONType, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# messages flagged for a person (`needs_human=true` in the log): a few among millions
NEEDS_HUMAN = text("needs_human IS TRUE")
# what the log's text search (`q`) reads: these columns of a message; on PostgreSQL as one
# text, a unit separator between them (no pattern without one can match across two), kept in
# `message_search` by triggers (migration 0007) and found there by its trigram index
SEARCH_SEPARATOR = "\x1f"
SEARCHED_COLUMNS = ("body", "subject", "text", "recipient", "template", "borrower_id", "loan_id")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Borrower(Base):
    __tablename__ = "borrowers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    timezone: Mapped[str | None] = mapped_column(String(64))
    address_country: Mapped[str | None] = mapped_column(String(2))
    address_region: Mapped[str | None] = mapped_column(String(100))
    address_city: Mapped[str | None] = mapped_column(String(100))
    address_postal_code: Mapped[str | None] = mapped_column(String(20))
    consent_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_email: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # occurred_at of the last applied borrower.upserted: older ones are recorded and ignored
    state_as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    phones: Mapped[list[BorrowerPhone]] = relationship(
        order_by="BorrowerPhone.position", cascade="all, delete-orphan", lazy="selectin"
    )


class BorrowerPhone(Base):
    __tablename__ = "borrower_phones"

    borrower_id: Mapped[str] = mapped_column(
        ForeignKey("borrowers.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    # what the number says of where its owner is, worked out when it was stored:
    # `zone,zone|CC` (`policy.zones.phone_facts_text`); NULL: stored before it was recorded
    facts: Mapped[str | None] = mapped_column(Text)


class ContactRestriction(Base):
    __tablename__ = "contact_restrictions"
    __table_args__ = (UniqueConstraint("borrower_id", "restriction"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    borrower_id: Mapped[str] = mapped_column(String(100), index=True)
    restriction: Mapped[str] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(Boolean)
    windows: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    state_as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class OptOut(Base):
    """Whether a recipient (phone or email) may receive a channel; one row per recipient."""

    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("channel", "recipient"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(10))
    recipient: Mapped[str] = mapped_column(String(320))
    borrower_id: Mapped[str | None] = mapped_column(String(100), index=True)
    opted_out: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class InvalidRecipient(Base):
    """A phone number or email address a provider told us cannot receive messages."""

    __tablename__ = "invalid_recipients"
    __table_args__ = (UniqueConstraint("channel", "recipient"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(10))
    recipient: Mapped[str] = mapped_column(String(320))
    code: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Loan(Base):
    __tablename__ = "loans"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    borrower_id: Mapped[str] = mapped_column(String(100), index=True)
    product: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3))
    amount_due: Mapped[Decimal] = mapped_column(Amount)
    balance: Mapped[Decimal] = mapped_column(Amount)
    days_past_due: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[dt.date] = mapped_column()
    account_number: Mapped[str] = mapped_column(String(64))
    closed_reason: Mapped[str | None] = mapped_column(String(20))
    # occurred_at of the last applied loan state: older updates are recorded and ignored
    state_as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    loan_id: Mapped[str] = mapped_column(String(100), index=True)
    amount: Mapped[Decimal] = mapped_column(Amount)
    paid_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    amount_due_after: Mapped[Decimal] = mapped_column(Amount)


class PromiseToPay(Base):
    __tablename__ = "promises"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    loan_id: Mapped[str] = mapped_column(String(100), index=True)
    amount: Mapped[Decimal] = mapped_column(Amount)
    promised_date: Mapped[dt.date] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class PaymentPlan(Base):
    __tablename__ = "payment_plans"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    loan_id: Mapped[str] = mapped_column(String(100), index=True)
    # [{"due_date": "2026-12-01", "amount": "100.00"}, ...]
    instalments: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class FieldVisit(Base):
    __tablename__ = "field_visits"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    loan_id: Mapped[str] = mapped_column(String(100), index=True)
    visit_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    collector_name: Mapped[str] = mapped_column(String(200))
    collector_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ReceivedEvent(Base):
    """The inbox: every accepted webhook event, stored before the 202 is sent."""

    __tablename__ = "received_events"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(60))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    borrower_id: Mapped[str | None] = mapped_column(String(100), index=True)
    loan_id: Mapped[str | None] = mapped_column(String(100), index=True)
    # pending (stored, not applied yet) | applied | ignored_stale | … | failed (tried again
    # at retry_at) | dead_letter (failed too often, not tried again), with the detail naming why
    outcome: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    # failed applies so far, and when the next one is due (`inbox.mark_failed`)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # the clock's look for events left pending or failed (`inbox.apply_orphaned`), the
        # final gate's for events not applied about a batch's borrowers and loans, and the
        # dead letters ops read
        Index(
            "ix_received_events_unapplied",
            "received_at",
            "id",
            postgresql_where=text("outcome IN ('pending', 'failed', 'dead_letter')"),
            sqlite_where=text("outcome IN ('pending', 'failed', 'dead_letter')"),
        ),
    )


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(10))
    template: Mapped[str] = mapped_column(String(100))
    segment: Mapped[dict[str, Any]] = mapped_column(JSONType)
    variants: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    throttle_per_minute: Mapped[int | None] = mapped_column(Integer)
    holdout_percent: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(20), index=True)
    # who did what (an ops token's name, SPEC §3) and when; the full trail is the audit log
    created_by: Mapped[str | None] = mapped_column(String(100))
    launched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    launched_by: Mapped[str | None] = mapped_column(String(100))
    # when it became completed or cancelled
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # what launching it found: targeted, eligible, holdout, suppressed and deferred by reason,
    # messages per variant (the figures a preview at the same instant shows)
    launch_counts: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CampaignMember(Base):
    """A borrower eligible for a campaign at its launch, the loan its message is (or would
    have been) about, and its arm: a variant's name, or `holdout` for the control group that
    gets nothing. Payments are compared arm by arm over these."""

    __tablename__ = "campaign_members"

    campaign_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    borrower_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    loan_id: Mapped[str] = mapped_column(String(100))
    arm: Mapped[str] = mapped_column(String(100))


class AuditEntry(Base):
    """One ops write: who, when, what, on what and how it ended. Only ever inserted."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Message(Base):
    """The outbox and the log: one row per message, whatever became of it."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_status_send_at", "status", "send_at"),
        Index("ix_messages_borrower_created", "borrower_id", "id"),
        Index("ix_messages_loan_status", "loan_id", "status"),
        # a campaign's messages, and runs of them in id order (its set-based moves)
        Index("ix_messages_campaign", "campaign_id", "id"),
        # the log filtered on one column, newest first, a page after a cursor: a range of
        # one of these (migration 0007); the deferred by reason from the first alone
        Index("ix_messages_status_id", "status", "id", postgresql_include=["reason"]),
        Index("ix_messages_channel_id", "channel", "id"),
        Index("ix_messages_stage_id", "stage", "id"),
        Index("ix_messages_purpose_id", "purpose", "id"),
        Index("ix_messages_reason_id", "reason", "id"),
        Index(
            "ix_messages_needs_human", "id", postgresql_where=NEEDS_HUMAN, sqlite_where=NEEDS_HUMAN
        ),
        # the log's since and until, newest first: read backwards from the index alone
        Index("ix_messages_id_send_at", "id", "send_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    purpose: Mapped[str] = mapped_column(String(40))
    borrower_id: Mapped[str] = mapped_column(String(100))
    loan_id: Mapped[str | None] = mapped_column(String(100))
    campaign_id: Mapped[str | None] = mapped_column(String(40))
    # the campaign variant (arm) the message belongs to
    variant: Mapped[str | None] = mapped_column(String(100))
    stage: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(10))
    template: Mapped[str] = mapped_column(String(100))
    template_version: Mapped[str | None] = mapped_column(String(40))
    locale: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str | None] = mapped_column(String(320))
    body: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int | None] = mapped_column(Integer)
    encoding: Mapped[str | None] = mapped_column(String(10))
    send_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    # the reason code of the latest timeline event, for filtering the log
    reason: Mapped[str | None] = mapped_column(String(40))
    fallback_from: Mapped[str | None] = mapped_column(String(10))
    refs: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    provider_id: Mapped[str | None] = mapped_column(String(200), index=True)
    # set, and committed, before a frequency-cap slot is taken in Redis, so that a rebuild of
    # the caps after Redis lost them always counts reservations still in flight
    cap_reserved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # the lease (outreach/worker_leases.py) of the worker process that marked it `sending`: while
    # that lease lives the message is its worker's; once it is gone, the reconciler's
    worker_lease: Mapped[str | None] = mapped_column(String(80))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    events: Mapped[list[MessageEvent]] = relationship(
        order_by="MessageEvent.id", cascade="all, delete-orphan", lazy="selectin"
    )


class MessageEvent(Base):
    """One step of a message's timeline: time, the status it moved to, why, and details."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)


class ProviderCallback(Base):
    """Provider webhooks already applied, so a duplicate changes nothing."""

    __tablename__ = "provider_callbacks"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ParkedCallback(Base):
    """A delivery status that arrived before the acceptance of its message was recorded (the
    provider's callback can overtake the worker's write): kept, and applied as soon as the
    message carries the provider's id; those never claimed are dropped after a day."""

    __tablename__ = "parked_callbacks"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_id: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(20))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class InboundReply(Base):
    """Something a borrower sent us (SMS reply), matched to the borrower by number."""

    __tablename__ = "inbound_replies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(10))
    sender: Mapped[str] = mapped_column(String(320), index=True)
    body: Mapped[str] = mapped_column(Text)
    borrower_id: Mapped[str | None] = mapped_column(String(100), index=True)
    # opt_out | opt_in | help | other
    classification: Mapped[str] = mapped_column(String(20))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


# The log's text search on PostgreSQL: each message's searched columns as one text
# (`SEARCHED_COLUMNS`, `SEARCH_SEPARATOR` between them), written by triggers on `messages`
# in the same transaction as the message (migration 0007), found by the trigram index; kept
# apart from `messages`, whose every move of a status would otherwise index every trigram
# again. Empty on SQLite, where the search reads the columns themselves.
MESSAGE_SEARCH = Table(
    "message_search",
    Base.metadata,
    Column(
        "message_id",
        String(40),
        ForeignKey("messages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("searched", Text, nullable=False),
    Index(
        "ix_message_search_searched",
        "searched",
        postgresql_using="gin",
        postgresql_ops={"searched": "gin_trgm_ops"},
    ),
)


# The overview's counts, kept on PostgreSQL by triggers on `messages` (migration 0007): rows
# of differences, only appended, summed when read and folded now and then
# (`store/overview.py`); empty on SQLite, where the overview counts from the log. Messages per
# half hour of `send_at` by channel and status; the withheld (suppressed, cancelled) per UTC
# day of `send_at` by status and reason. No key: nothing looks a row up.
MESSAGE_DAY_COUNTS = Table(
    "message_day_counts",
    Base.metadata,
    Column("bucket", UTCDateTime, nullable=False),
    Column("channel", String(10), nullable=False),
    Column("status", String(20), nullable=False),
    Column("n", BigInteger, nullable=False),
    # a sum of a key's rows (one a key), or a difference a statement appended
    Column("folded", Boolean, nullable=False, server_default=false()),
    Index("ix_message_day_counts_bucket", "bucket"),
    Index(
        "ix_message_day_counts_fresh",
        "bucket",
        postgresql_where=text("NOT folded"),
        sqlite_where=text("NOT folded"),
    ),
)
MESSAGE_WITHHELD_COUNTS = Table(
    "message_withheld_counts",
    Base.metadata,
    Column("day", Date, nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", String(40)),
    Column("n", BigInteger, nullable=False),
    Column("folded", Boolean, nullable=False, server_default=false()),
    Index("ix_message_withheld_counts_day", "day"),
    Index(
        "ix_message_withheld_counts_fresh",
        "day",
        postgresql_where=text("NOT folded"),
        sqlite_where=text("NOT folded"),
    ),
)


# Counts for `GET /metrics`, kept on PostgreSQL by triggers on `messages` and
# `received_events` (migration 0008): rows of differences, only appended, summed when read and
# folded now and then (`store/counts.py`); empty on SQLite, where the counts are read with
# GROUP BY. No key: nothing looks a row up.
MESSAGE_COUNTS = Table(
    "message_counts",
    Base.metadata,
    Column("status", String(20), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("n", BigInteger, nullable=False),
)
EVENT_COUNTS = Table(
    "event_counts",
    Base.metadata,
    Column("type", String(60), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("n", BigInteger, nullable=False),
)
