"""What borrowers tell us: replies (STOP, START, HELP, anything else) and unsubscribe clicks
(SPEC §7). What providers tell us of deliveries is `delivery_status`."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy.orm import Session

from outreach import policy as pol
from outreach.domain import Channel, PlannedMessage, Purpose, Reason, Status
from outreach.service import planner
from outreach.service.messages import MessageNotFound
from outreach.store.borrowers import (
    load_borrower,
    lock_addresses,
    normalize_recipient,
    set_opt_out,
)
from outreach.store.messages import addressed_to, last_sms_sent_to, write_rows
from outreach.store.replies import borrower_for_email, borrower_for_phone, record_reply

OPT_OUT = "opt_out"
OPT_IN = "opt_in"
HELP = "help"
OTHER = "other"

OPT_OUT_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "OPT OUT",
        "退订",
        "退訂",
        "TD",
        "T",
        "回复TD退订",
        "回覆TD退訂",
        "取消订阅",
        "取消訂閱",
    }
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES", "恢复订阅", "恢復訂閱", "订阅", "訂閱"})
HELP_KEYWORDS = frozenset({"HELP", "INFO", "帮助", "幫助", "求助"})

# Free-text revocations of consent: "please stop texting me", "不要再发了". Matched only as a
# whole request to stop contact, so "I can't stop worrying about this loan" goes to a human.
REVOCATION_PATTERNS = (
    re.compile(
        r"\b(stop|quit|cease)\s+(texting|messaging|contacting|calling|sending|emailing)\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(don'?t|do not|never)\s+(text|message|contact|call|email|sms)\s+me\b", re.IGNORECASE
    ),
    re.compile(
        r"\b(leave me alone|remove me|take me off|unsubscribe me|opt me out)\b", re.IGNORECASE
    ),
    re.compile(r"\bno more (texts|messages|sms)\b", re.IGNORECASE),
    re.compile(r"(不要|别|別|勿|请勿|請勿|不准|不許|不许)再?(给我)?(发|發|传|傳)"),
    re.compile(r"(停止|取消)(发送|發送|短信|简讯|簡訊|訊息|信息|联系|聯繫|联络|聯絡)"),
    re.compile(r"(不要|别|別|请勿|請勿)再?(联系|聯繫|联络|聯絡|打扰|打擾|骚扰|騷擾)"),
)


def _normalized(body: str) -> str:
    text = unicodedata.normalize("NFKC", body).strip().upper()
    return re.sub(r"[\s\.\!\?。！？,，、]+$", "", re.sub(r"^[\s\.\!\?。！？]+", "", text))


def classify(body: str) -> str:
    """opt_out, opt_in, help or other, by the keyword alone or a plain request to stop."""
    keyword = _normalized(body)
    if keyword in OPT_OUT_KEYWORDS:
        return OPT_OUT
    if keyword in OPT_IN_KEYWORDS:
        return OPT_IN
    if keyword in HELP_KEYWORDS:
        return HELP
    if any(pattern.search(body) for pattern in REVOCATION_PATTERNS):
        return OPT_OUT
    return OTHER


@dataclass(frozen=True)
class InboundOutcome:
    classification: str
    borrower_id: str | None
    duplicate: bool = False
    reply_message_id: str | None = None


def _reply(
    session: Session,
    policy: pol.Policy,
    borrower_id: str,
    purpose: Purpose,
    channel: Channel,
    key: str,
    now: dt.datetime,
) -> str | None:
    borrower = load_borrower(session, borrower_id)
    if borrower is None or borrower.recipient(channel) is None:
        return None
    planned = PlannedMessage(
        key=key,
        purpose=purpose,
        borrower_id=borrower_id,
        loan_id=None,
        stage=None,
        channel=channel,
        template=purpose.value if purpose is not Purpose.HELP_REPLY else "help_reply",
        send_at=now,
    )
    return planner.insert_message(session, policy, borrower, None, planned, now)


def handle_sms_reply(
    session: Session,
    policy: pol.Policy,
    *,
    sender: str,
    body: str,
    provider_id: str | None,
    now: dt.datetime,
    received_at: dt.datetime | None = None,
) -> InboundOutcome:
    """Record a borrower's SMS, act on STOP/START/HELP, flag anything else for a human.
    `received_at` is when it reached us, if before `now` (a reply kept while the database
    was unreachable)."""
    sender = normalize_recipient(Channel.SMS, sender)
    lock_addresses(session, [sender])
    borrower_id = borrower_for_phone(session, sender)
    classification = classify(body)
    inserted = record_reply(
        session,
        provider_id=provider_id,
        channel=Channel.SMS.value,
        sender=sender,
        body=body,
        borrower_id=borrower_id,
        classification=classification,
        needs_human=classification == OTHER,
        received_at=received_at or now,
    )
    if inserted is None:
        return InboundOutcome(classification, borrower_id, duplicate=True)
    reply_id = None
    key_suffix = provider_id or str(inserted)
    if classification in (OPT_OUT, OPT_IN):
        opting_out = classification == OPT_OUT
        changed = set_opt_out(
            session,
            channel=Channel.SMS,
            recipient=sender,
            opted_out=opting_out,
            source="sms_reply",
            borrower_id=borrower_id,
            now=now,
        )
        session.flush()
        if borrower_id is not None:
            if opting_out:
                planner.regate_borrower(session, policy, borrower_id, now)
            else:
                for loan_id in planner.loans_of(session, borrower_id):
                    planner.replan_loan(session, policy, loan_id, now)
            # one confirmation per change: a second STOP gets no second message
            if changed:
                purpose = Purpose.OPTOUT_CONFIRMATION if opting_out else Purpose.OPTIN_CONFIRMATION
                reply_id = _reply(
                    session,
                    policy,
                    borrower_id,
                    purpose,
                    Channel.SMS,
                    f"{purpose.value}:sms:{key_suffix}",
                    now,
                )
    elif classification == OTHER and borrower_id is not None:
        flag_for_a_human(session, borrower_id, sender, body, now)
    elif classification == HELP and borrower_id is not None:
        reply_id = _reply(
            session,
            policy,
            borrower_id,
            Purpose.HELP_REPLY,
            Channel.SMS,
            f"help_reply:sms:{key_suffix}",
            now,
        )
    return InboundOutcome(classification, borrower_id, reply_message_id=reply_id)


def flag_for_a_human(
    session: Session, borrower_id: str, sender: str, body: str, now: dt.datetime
) -> None:
    """A reply no keyword answers ("I lost my job", "可以分期吗") goes to a person, not a bot:
    the message it answers is flagged in the log, with the reply on its timeline."""
    answered = last_sms_sent_to(session, borrower_id, sender)
    if answered is None:
        return
    answered.needs_human = True
    excerpt = body if len(body) <= 200 else body[:199] + "…"
    answered.move(Status(answered.status), Reason.NEEDS_HUMAN, now, f"reply={excerpt}")
    write_rows(session, [answered])


def handle_unsubscribe(
    session: Session, policy: pol.Policy, *, message_id: str, now: dt.datetime
) -> bool:
    """The signed unsubscribe link of a message was used: opt out the address that message
    went to and confirm once; whether that changed anything. MessageNotFound when there is
    no such message or it was never rendered for an address."""
    addressed = addressed_to(session, message_id)
    if addressed is None:
        raise MessageNotFound(f"no message {message_id} with a recipient")
    channel = Channel(addressed[0])
    recipient = normalize_recipient(channel, addressed[1])
    lock_addresses(session, [recipient])
    borrower_id = (
        borrower_for_email(session, recipient)
        if channel is Channel.EMAIL
        else borrower_for_phone(session, recipient)
    )
    changed = set_opt_out(
        session,
        channel=channel,
        recipient=recipient,
        opted_out=True,
        source="unsubscribe_link",
        borrower_id=borrower_id,
        now=now,
    )
    if not changed:
        return False
    inserted = record_reply(
        session,
        provider_id=None,
        channel=channel.value,
        sender=recipient,
        body="List-Unsubscribe=One-Click",
        borrower_id=borrower_id,
        classification=OPT_OUT,
        needs_human=False,
        received_at=now,
    )
    session.flush()
    if borrower_id is not None:
        planner.regate_borrower(session, policy, borrower_id, now)
        _reply(
            session,
            policy,
            borrower_id,
            Purpose.OPTOUT_CONFIRMATION,
            channel,
            f"optout_confirmation:{channel.value}:{inserted}",
            now,
        )
    return True
