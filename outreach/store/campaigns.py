"""Campaigns in the database: their rows, the loans a segment reaches, their holdout groups,
the set-based moves of their messages, and the reads their progress is counted from."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, cast

from sqlalchemy import Select, Table, bindparam, exists, func, null, or_, select, update
from sqlalchemy.orm import Session

from outreach.domain import PENDING_STATUSES, Reason, Status
from outreach.store import models as m
from outreach.store.bulk import insert_rows, update_rows
from outreach.store.db import takes_row_locks
from outreach.store.messages import MESSAGES, STEPS, timeline_step

CAMPAIGNS = cast(Table, m.Campaign.__table__)
MEMBERS = cast(Table, m.CampaignMember.__table__)
LOANS = cast(Table, m.Loan.__table__)
BORROWERS = cast(Table, m.Borrower.__table__)
PAYMENTS = cast(Table, m.Payment.__table__)
PROMISES = cast(Table, m.PromiseToPay.__table__)
PLANS = cast(Table, m.PaymentPlan.__table__)
PHONES = cast(Table, m.BorrowerPhone.__table__)
RESTRICTIONS = cast(Table, m.ContactRestriction.__table__)
OPT_OUTS = cast(Table, m.OptOut.__table__)
INVALID = cast(Table, m.InvalidRecipient.__table__)
# messages moved per statement by a set-based move (each statement's ids are held in memory)
MOVE_CHUNK = 5000
_PENDING = sorted(status.value for status in PENDING_STATUSES)


def insert_campaign(session: Session, values: Mapping[str, Any]) -> None:
    session.execute(CAMPAIGNS.insert().values(**values))


def get_campaign(session: Session, campaign_id: str, *, lock: bool = False) -> m.Campaign | None:
    """One campaign; locked (on PostgreSQL) for a transition when `lock`."""
    query = select(m.Campaign).where(m.Campaign.id == campaign_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def idle_campaigns(session: Session, statuses: Sequence[str]) -> list[str]:
    """Ids of the campaigns in these statuses that no transition is changing now: a pause or
    a cancel holds its campaign's row for its whole transaction, so those are left out
    (locked rows skipped, on PostgreSQL)."""
    query = select(CAMPAIGNS.c.id).where(CAMPAIGNS.c.status.in_(list(statuses)))
    if takes_row_locks(session):
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query).scalars())


def list_campaigns(session: Session, *, status: str | None = None) -> Sequence[m.Campaign]:
    query = select(m.Campaign)
    if status is not None:
        query = query.where(m.Campaign.status.in_(status.split(",")))
    return session.scalars(query.order_by(m.Campaign.created_at.desc(), m.Campaign.id)).all()


class CampaignState(NamedTuple):
    """What dispatch needs of a campaign to hand its messages over."""

    status: str
    throttle_per_minute: int | None
    end_at: dt.datetime | None


def campaign_states(session: Session, campaign_ids: Iterable[str]) -> dict[str, CampaignState]:
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(
            CAMPAIGNS.c.id, CAMPAIGNS.c.status, CAMPAIGNS.c.throttle_per_minute, CAMPAIGNS.c.end_at
        ).where(CAMPAIGNS.c.id.in_(ids))
    )
    return {row.id: CampaignState(row.status, row.throttle_per_minute, row.end_at) for row in rows}


class Candidate(NamedTuple):
    """An open loan a segment may reach, with what its filters read, and whether it has a
    promise or a payment plan (which the gate reads beyond the borrower)."""

    loan_id: str
    borrower_id: str
    product: str
    amount_due: Decimal
    days_past_due: int
    as_of: dt.datetime
    locale: str
    tags: list[str]
    has_terms: bool


def segment_candidates(
    session: Session,
    *,
    products: Sequence[str] | None,
    amount_min: Decimal | None,
    amount_max: Decimal | None,
    with_locale: bool = True,
    with_tags: bool = True,
    batch: int = 5000,
) -> Iterator[Candidate]:
    """Every open loan with something owed that the segment's column filters admit, with its
    borrower's locale and tags, in borrower order (so one pass can pick each borrower's
    loan), streamed in batches. Days past due age with time, and locale and tags are read
    in Python: the caller filters on those (`with_locale`, `with_tags`: read them at all)."""
    query = (
        select(
            LOANS.c.id,
            LOANS.c.borrower_id,
            LOANS.c.product,
            LOANS.c.amount_due,
            LOANS.c.days_past_due,
            LOANS.c.state_as_of,
            # read only when a filter asks (a JSON list per row costs more than the rest)
            BORROWERS.c.locale if with_locale else null(),
            BORROWERS.c.tags if with_tags else null(),
            or_(
                exists().where(PROMISES.c.loan_id == LOANS.c.id),
                exists().where(PLANS.c.loan_id == LOANS.c.id),
            ),
        )
        .join(BORROWERS, BORROWERS.c.id == LOANS.c.borrower_id)
        .where(LOANS.c.closed_reason.is_(None), LOANS.c.amount_due > 0)
        .order_by(LOANS.c.borrower_id, LOANS.c.id)
    )
    if products:
        query = query.where(LOANS.c.product.in_(list(products)))
    if amount_min is not None:
        query = query.where(LOANS.c.amount_due >= amount_min)
    if amount_max is not None:
        query = query.where(LOANS.c.amount_due <= amount_max)
    streamed = query.execution_options(stream_results=True, yield_per=batch)
    for rows in session.connection().execute(streamed).partitions(batch):
        for row in rows:
            loan_id, borrower_id, product, amount_due, dpd, as_of, locale, tags, terms = row
            yield Candidate(
                loan_id, borrower_id, product, amount_due, dpd, as_of, locale, tags, bool(terms)
            )


class BorrowerFacts(NamedTuple):
    """What a campaign's plan reads of a borrower, from the rows as stored."""

    id: str
    locale: str
    email: str | None
    timezone: str | None
    address: tuple[str | None, str | None, str | None, str | None]
    consent_sms: bool
    consent_email: bool
    phones: tuple[str, ...]
    phone_facts: tuple[str | None, ...]
    restrictions: frozenset[str]


def borrower_facts(session: Session, first: str, last: str) -> dict[str, BorrowerFacts]:
    """Every borrower with an id from `first` to `last`, with numbers and active
    restrictions, in three range reads (a campaign's batch of targets is a run of borrower
    ids, so this reads each row once, with no list of keys)."""
    between = BORROWERS.c.id.between(first, last)
    phones: dict[str, list[tuple[str, str | None]]] = {}
    for borrower_id, phone, facts in session.execute(
        select(PHONES.c.borrower_id, PHONES.c.phone, PHONES.c.facts)
        .where(PHONES.c.borrower_id.between(first, last))
        .order_by(PHONES.c.borrower_id, PHONES.c.position)
    ):
        phones.setdefault(borrower_id, []).append((phone, facts))
    restrictions: dict[str, set[str]] = {}
    for borrower_id, restriction in session.execute(
        select(RESTRICTIONS.c.borrower_id, RESTRICTIONS.c.restriction).where(
            RESTRICTIONS.c.borrower_id.between(first, last), RESTRICTIONS.c.active.is_(True)
        )
    ):
        restrictions.setdefault(borrower_id, set()).add(restriction)
    found: dict[str, BorrowerFacts] = {}
    for row in session.execute(
        select(
            BORROWERS.c.id,
            BORROWERS.c.locale,
            BORROWERS.c.email,
            BORROWERS.c.timezone,
            BORROWERS.c.address_country,
            BORROWERS.c.address_region,
            BORROWERS.c.address_city,
            BORROWERS.c.address_postal_code,
            BORROWERS.c.consent_sms,
            BORROWERS.c.consent_email,
        ).where(between)
    ):
        numbers = phones.get(row.id, [])
        found[row.id] = BorrowerFacts(
            id=row.id,
            locale=row.locale,
            email=row.email,
            timezone=row.timezone,
            address=(
                row.address_country,
                row.address_region,
                row.address_city,
                row.address_postal_code,
            ),
            consent_sms=bool(row.consent_sms),
            consent_email=bool(row.consent_email),
            phones=tuple(phone for phone, _ in numbers),
            phone_facts=tuple(facts for _, facts in numbers),
            restrictions=frozenset(restrictions.get(row.id, ())),
        )
    return found


def listed_recipients(session: Session) -> frozenset[str]:
    """Every address opted out of a channel or known not to receive, trimmed and lower-cased
    (a borrower with one of these is planned on its own, as the gate reads the lists)."""
    opted_out = session.execute(select(OPT_OUTS.c.recipient).where(OPT_OUTS.c.opted_out.is_(True)))
    invalid = session.execute(select(INVALID.c.recipient))
    return frozenset(
        recipient.strip().lower() for (recipient,) in [*opted_out, *invalid] if recipient
    )


def insert_members(
    session: Session, campaign_id: str, members: Sequence[tuple[str, str, str]]
) -> None:
    """The borrowers eligible at launch: (borrower id, loan id, arm)."""
    insert_rows(
        session,
        MEMBERS,
        [
            {"campaign_id": campaign_id, "borrower_id": borrower, "loan_id": loan, "arm": arm}
            for borrower, loan, arm in members
        ],
    )


def _pending_of_campaign(
    *statuses: str, reason: str | None = None
) -> tuple[Select[Any], Select[Any]]:
    """The next MOVE_CHUNK messages of a campaign in these statuses after an id, in id
    order; and the same locking them, skipping rows another transaction holds (a worker
    dispatching one: the campaign's status, read by the final gate, settles it there)."""
    query = (
        select(MESSAGES.c.id)
        .where(
            MESSAGES.c.campaign_id == bindparam("campaign_id"),
            MESSAGES.c.status.in_(statuses),
            MESSAGES.c.id > bindparam("after"),
        )
        .order_by(MESSAGES.c.id)
        .limit(MOVE_CHUNK)
    )
    if reason is not None:
        query = query.where(MESSAGES.c.reason == reason)
    return query, query.with_for_update(skip_locked=True)


_PENDING_OF = _pending_of_campaign(*_PENDING)
_PAUSED_OF = _pending_of_campaign(Status.DEFERRED.value, reason=Reason.CAMPAIGN_PAUSED.value)


def _chunks_of(
    session: Session, queries: tuple[Select[Any], Select[Any]], campaign_id: str
) -> Iterator[list[str]]:
    """The campaign's messages the query picks, MOVE_CHUNK at a time in id order, each run
    locked (PostgreSQL) before the caller moves it: rows are locked in one order, as every
    other writer of messages locks them, so a move of a whole campaign never deadlocks."""
    query = queries[1] if takes_row_locks(session) else queries[0]
    after = ""
    while True:
        ids = list(session.execute(query, {"campaign_id": campaign_id, "after": after}).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


def withhold_pending(
    session: Session,
    campaign_id: str,
    status: Status,
    reason: Reason,
    now: dt.datetime,
    detail: str | None = None,
) -> int:
    """Move every message of the campaign not handed over yet to `status` with `reason`, a
    step on each timeline; in statements of MOVE_CHUNK messages. Returns how many."""
    moved = 0
    for ids in _chunks_of(session, _PENDING_OF, campaign_id):
        session.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id.in_(ids))
            .values(status=status.value, reason=reason.value, updated_at=now)
        )
        insert_rows(session, STEPS, [timeline_step(i, now, status, reason, detail) for i in ids])
        moved += len(ids)
    return moved


def bring_paused_forward(
    session: Session, campaign_id: str, now: dt.datetime, spacing: dt.timedelta | None
) -> int:
    """The campaign's messages held for its pause are due again: at `now`, or one every
    `spacing` from `now` in id order (a throttled campaign). Returns how many."""
    brought = 0
    for ids in _chunks_of(session, _PAUSED_OF, campaign_id):
        rows = [
            {"id": message_id, "send_at": now + spacing * (brought + index) if spacing else now}
            for index, message_id in enumerate(ids)
        ]
        update_rows(session, MESSAGES, "id", rows)
        brought += len(rows)
    return brought


ArmCount = tuple[str | None, str, str | None, int]


def counts_by_arm(session: Session, campaign_id: str) -> list[ArmCount]:
    """(variant, status, reason, messages) of the campaign."""
    return counts_by_arms(session, [campaign_id]).get(campaign_id, [])


def counts_by_arms(session: Session, campaign_ids: Sequence[str]) -> dict[str, list[ArmCount]]:
    """(variant, status, reason, messages) of each of these campaigns, in one grouped
    statement (a list of campaigns counts them all at once, not one by one)."""
    if not campaign_ids:
        return {}
    rows = session.execute(
        select(
            MESSAGES.c.campaign_id,
            MESSAGES.c.variant,
            MESSAGES.c.status,
            MESSAGES.c.reason,
            func.count(),
        )
        .where(MESSAGES.c.campaign_id.in_(list(campaign_ids)))
        .group_by(MESSAGES.c.campaign_id, MESSAGES.c.variant, MESSAGES.c.status, MESSAGES.c.reason)
    )
    found: dict[str, list[ArmCount]] = {}
    for campaign_id, variant, status, reason, count in rows:
        found.setdefault(campaign_id, []).append((variant, status, reason, int(count)))
    return found


def pending_count(session: Session, campaign_id: str) -> int:
    """Messages of the campaign not final and not handed over yet, or being handed over."""
    statuses = [*_PENDING, Status.SENDING.value]
    return int(
        session.execute(
            select(func.count())
            .select_from(MESSAGES)
            .where(MESSAGES.c.campaign_id == campaign_id, MESSAGES.c.status.in_(statuses))
        ).scalar_one()
    )


def payments_after_sends(
    session: Session, campaign_id: str
) -> Iterator[tuple[str | None, str, dt.datetime, dt.datetime, Decimal, str]]:
    """(variant, message id, sent_at, paid_at, amount, currency) for every payment on a
    campaign message's loan received after the message was handed over."""
    query = (
        select(
            MESSAGES.c.variant,
            MESSAGES.c.id,
            MESSAGES.c.sent_at,
            PAYMENTS.c.paid_at,
            PAYMENTS.c.amount,
            LOANS.c.currency,
        )
        .join(PAYMENTS, PAYMENTS.c.loan_id == MESSAGES.c.loan_id)
        .join(LOANS, LOANS.c.id == MESSAGES.c.loan_id)
        .where(
            MESSAGES.c.campaign_id == campaign_id,
            MESSAGES.c.sent_at.is_not(None),
            PAYMENTS.c.paid_at > MESSAGES.c.sent_at,
        )
    )
    streamed = query.execution_options(stream_results=True, yield_per=5000)
    for row in session.connection().execute(streamed):
        yield row[0], row[1], row[2], row[3], row[4], row[5]


class ArmPayments(NamedTuple):
    """An arm's members, how many paid in a span, and the amounts paid, by currency."""

    members: int
    paid: int
    amounts: dict[str, Decimal]


def payments_by_arm(
    session: Session, campaign_id: str, since: dt.datetime, until: dt.datetime
) -> dict[str, ArmPayments]:
    """Per arm: its members, those with a payment on their loan in (since, until], and the
    amount they paid in it by currency."""
    sizes: dict[str, int] = dict(
        session.execute(
            select(MEMBERS.c.arm, func.count())
            .where(MEMBERS.c.campaign_id == campaign_id)
            .group_by(MEMBERS.c.arm)
        ).all()
    )
    paid = session.execute(
        select(
            MEMBERS.c.arm,
            LOANS.c.currency,
            func.count(func.distinct(MEMBERS.c.borrower_id)),
            func.sum(PAYMENTS.c.amount),
        )
        .select_from(MEMBERS)
        .join(PAYMENTS, PAYMENTS.c.loan_id == MEMBERS.c.loan_id)
        .join(LOANS, LOANS.c.id == MEMBERS.c.loan_id)
        .where(
            MEMBERS.c.campaign_id == campaign_id,
            PAYMENTS.c.paid_at > since,
            PAYMENTS.c.paid_at <= until,
        )
        .group_by(MEMBERS.c.arm, LOANS.c.currency)
    ).all()
    arms = {arm: ArmPayments(int(count), 0, {}) for arm, count in sizes.items()}
    for arm, currency, payers, amount in paid:
        found = arms.setdefault(arm, ArmPayments(0, 0, {}))
        found.amounts[currency] = Decimal(amount or 0)
        # a member has one loan, so one currency: the payers of each currency add up
        arms[arm] = found._replace(paid=found.paid + int(payers))
    return arms
