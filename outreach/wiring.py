"""Builds the service objects a process needs from its Runtime (settings, database, Redis)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.campaign_control import CampaignControl
from outreach.caps import CapReserver, HistoryEntry
from outreach.channels.base import Sender
from outreach.channels.console import ConsoleSender
from outreach.channels.rate_limit import SegmentRateLimiter
from outreach.channels.simulated import SimulatedSender
from outreach.channels.smtp_email import SmtpSender
from outreach.channels.twilio_sms import TwilioSender
from outreach.domain import Channel, Purpose
from outreach.message_leases import MessageLeases
from outreach.render import Renderer
from outreach.runtime import Runtime
from outreach.service.dispatch import Dispatcher
from outreach.service.journal import ReplyIntake, ReplyJournal
from outreach.settings import Settings
from outreach.store.messages import CapHistory


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cap_history(
    sessions: sessionmaker[Session],
) -> Callable[[str, dt.datetime], list[HistoryEntry]]:
    """The message log as the caps' source of truth when Redis has lost them."""

    def history(borrower_id: str, since: dt.datetime) -> list[HistoryEntry]:
        with sessions() as session:
            return list(_CAP_HISTORY.of(session, borrower_id, since))

    return history


def cap_history_of_many(
    sessions: sessionmaker[Session],
) -> Callable[[Sequence[str], dt.datetime], dict[str, list[HistoryEntry]]]:
    """`cap_history` for many borrowers in one query per 500 (a batch's rebuilds)."""

    def history(borrower_ids: Sequence[str], since: dt.datetime) -> dict[str, list[HistoryEntry]]:
        with sessions() as session:
            return {
                borrower_id: list(slots)
                for borrower_id, slots in _CAP_HISTORY.of_many(session, borrower_ids, since).items()
            }

    return history


_CAP_HISTORY = CapHistory([p.value for p in Purpose if pol.counts_against_caps(p)])


def cap_reserver(
    client: Redis, policy: pol.Policy, sessions: sessionmaker[Session], **options: Any
) -> CapReserver:
    """Caps on `client` whose rebuilds read the message log of `sessions`."""
    return CapReserver(
        client,
        policy,
        history=cap_history(sessions),
        history_of_many=cap_history_of_many(sessions),
        **options,
    )


def link_keys(settings: Settings) -> tuple[bytes, ...]:
    """The keys of signed links (OUTREACH_LINK_SECRET), newest first: the first signs."""
    return tuple(secret.reveal().encode() for secret in settings.link_secrets)


def build_senders(
    settings: Settings, redis_client: Redis, clock: Callable[[], dt.datetime]
) -> dict[Channel, Sender]:
    """The provider for each channel, picked by OUTREACH_SMS_PROVIDER / OUTREACH_EMAIL_PROVIDER."""
    senders: dict[Channel, Sender] = {}
    if settings.sms_provider == "twilio":
        limiter = SegmentRateLimiter(redis_client, settings.sms_rate)
        senders[Channel.SMS] = TwilioSender(settings, rate_limiter=limiter, clock=clock)
    elif settings.sms_provider == "simulated":
        senders[Channel.SMS] = SimulatedSender(Channel.SMS, clock)
    else:
        senders[Channel.SMS] = ConsoleSender(Channel.SMS)
    if settings.email_provider == "smtp":
        senders[Channel.EMAIL] = SmtpSender(settings, clock=clock)
    elif settings.email_provider == "simulated":
        senders[Channel.EMAIL] = SimulatedSender(Channel.EMAIL, clock)
    else:
        senders[Channel.EMAIL] = ConsoleSender(Channel.EMAIL)
    return senders


@dataclass
class Services:
    runtime: Runtime
    policy: pol.Policy
    renderer: Renderer
    caps: CapReserver
    dispatcher: Dispatcher
    replies: ReplyIntake
    campaigns: CampaignControl

    @classmethod
    def build(
        cls,
        runtime: Runtime,
        *,
        senders: dict[Channel, Sender] | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> Services:
        settings = runtime.settings
        policy = pol.load_policy(settings.policy_path)
        renderer = Renderer(settings.templates_dir)
        caps = cap_reserver(runtime.redis.client, policy, runtime.sessions)
        campaigns = CampaignControl(runtime.redis.client)
        dispatcher = Dispatcher(
            campaigns=campaigns,
            leases=MessageLeases(runtime.redis.client),
            sessions=runtime.sessions,
            policy=policy,
            renderer=renderer,
            caps=caps,
            senders=senders
            if senders is not None
            else build_senders(settings, runtime.redis.client, clock),
            public_url=settings.public_url,
            link_keys=link_keys(settings),
            clock=clock,
        )
        journal = ReplyJournal(runtime.redis.client)
        dispatcher.replies_pending = journal.held_senders
        replies = ReplyIntake(journal, runtime.sessions, policy, clock)
        return cls(runtime, policy, renderer, caps, dispatcher, replies, campaigns)
