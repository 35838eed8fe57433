"""The message log's reads (store/message_log.py) with the indexes of migration 0007: every
filter, page after page by cursor, lists exactly the messages a plain reading of the filter
picks, newest first, on both stores."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from outreach.domain import Purpose, Status
from outreach.service.log import MessageFilter, decode_cursor, list_messages
from outreach.service.messages import new_id
from outreach.store import message_log
from outreach.store.models import SEARCHED_COLUMNS, Message

NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
BODIES = [
    "Harbor Lending: your account ending 5678 is past due. Reply STOP to opt out.",
    "【海港信贷】王芳您好，您尾号7890的账户已逾期。回复TD退订",
    "50%_off your fee: reply HELP",
    "a back\\slash and 100% sure",
    "Ünïcödé Ärger",
    "tail of a body",
    None,
]
SUBJECTS = [None, "Your payment is past due", "head of a subject", "您的账户"]


def the_log(rnd: random.Random, count: int) -> list[Message]:
    rows = []
    for number in range(count):
        created = NOW - dt.timedelta(minutes=rnd.randrange(0, 60 * 24 * 60))
        channel = rnd.choice(["sms", "email"])
        status = rnd.choice(list(Status))
        rows.append(
            Message(
                id=new_id("msg_", created, name=f"k{number}"),
                idempotency_key=f"k{number}",
                purpose=rnd.choice(list(Purpose)).value,
                borrower_id=f"B{rnd.randrange(12):03d}",
                loan_id=rnd.choice([None, f"L{rnd.randrange(20):03d}"]),
                campaign_id=rnd.choice([None, None, "cmp_a", "cmp_b"]),
                stage=rnd.choice([None, "early", "late", "pre_legal"]),
                channel=channel,
                template=rnd.choice(["early_first_notice", "late_follow_up", "help_reply"]),
                locale="en-US",
                recipient=f"+1415555{rnd.randrange(10000):04d}"
                if channel == "sms"
                else f"user{rnd.randrange(50)}@Example.NET",
                body=rnd.choice(BODIES) if channel == "sms" else None,
                subject=rnd.choice(SUBJECTS) if channel == "email" else None,
                text=rnd.choice(BODIES) if channel == "email" else None,
                send_at=created + dt.timedelta(minutes=rnd.randrange(0, 3 * 24 * 60)),
                status=status.value,
                reason=rnd.choice([None, "planned", "quiet_hours", "opted_out", "needs_human"]),
                needs_human=rnd.random() < 0.1,
                refs={},
                created_at=created,
                updated_at=created,
            )
        )
    return rows


def picks(criteria: MessageFilter) -> Callable[[Message], bool]:
    """The filter read plainly: every criterion given holds."""

    def matches(row: Message) -> bool:
        for name in ("borrower_id", "loan_id", "campaign_id", "channel", "stage", "reason"):
            value = getattr(criteria, name)
            if value is not None and getattr(row, name) != value:
                return False
        if criteria.purpose is not None and row.purpose != criteria.purpose:
            return False
        if criteria.status is not None and row.status not in criteria.status.split(","):
            return False
        if criteria.needs_human is not None and row.needs_human != criteria.needs_human:
            return False
        if criteria.since is not None and row.send_at < criteria.since:
            return False
        if criteria.until is not None and row.send_at >= criteria.until:
            return False
        if criteria.q:
            # ASCII case only: SQLite folds no other
            wanted = criteria.q.lower()
            found = (getattr(row, name) for name in SEARCHED_COLUMNS)
            if not any(value is not None and wanted in value.lower() for value in found):
                return False
        return True

    return matches


FILTERS = [
    {},
    {"status": "delivered"},
    {"status": "sending"},
    {"status": "sent,delivered,failed"},
    {"channel": "email"},
    {"stage": "late"},
    {"purpose": "campaign"},
    {"reason": "quiet_hours"},
    {"campaign_id": "cmp_b"},
    {"borrower_id": "B007"},
    {"loan_id": "L003"},
    {"needs_human": "true"},
    {"needs_human": "false"},
    {"since": "2026-11-01T00:00:00Z"},
    {"until": "2026-10-15T12:00:00Z"},
    {"since": "2026-10-20T00:00:00Z", "until": "2026-10-27T00:00:00Z"},
    {"q": "reply stop"},
    {"q": "逾期"},
    {"q": "王芳"},
    {"q": "尾号7890"},
    {"q": "50%_off"},
    {"q": "100%"},
    {"q": "_"},
    {"q": "back\\slash"},
    {"q": "example.net"},
    {"q": "+1415555"},
    {"q": "L01"},
    {"q": "b00"},
    {"q": "late_follow"},
    {"q": "Ünïcödé"},
    {"q": "nowhere at all"},
    # across two columns: the text of one and the subject of the next, never a match
    {"q": "tail of a body\x1fhead"},
    {"q": "body\x1f"},
    {"status": "delivered", "channel": "sms", "q": "stop"},
    {"stage": "early", "since": "2026-10-01T00:00:00Z", "needs_human": "false"},
]


@pytest.fixture
def log(engine: Engine) -> list[Message]:
    rows = the_log(random.Random(11), 700)
    with Session(engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.commit()
    return rows


@pytest.mark.parametrize(
    "params", FILTERS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items())
)
@pytest.mark.parametrize("window", [60, 4000], ids=["window60", "window4000"])
def test_every_page_of_a_filter_holds_exactly_what_it_picks(
    engine: Engine,
    log: list[Message],
    params: dict[str, str],
    window: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a text search reads the newest `window` messages first, then asks the trigram index;
    # one the index cannot serve reads as many at most for a page
    monkeypatch.setattr(message_log, "SEARCH_WINDOWS", (window, 2 * window))
    monkeypatch.setattr(message_log, "SEARCH_BUDGET", 2 * window)
    criteria = MessageFilter.parse(params)
    expected = sorted((row.id for row in log if picks(criteria)(row)), reverse=True)
    shown: list[str] = []
    cursor = None
    with Session(engine) as session:
        while True:
            items, cursor = list_messages(session, criteria, limit=17, cursor=cursor)
            shown.extend(item["id"] for item in items)
            if cursor is None:
                break
            if not criteria.q or message_log.has_trigram(criteria.q):
                assert len(items) == 17 and decode_cursor(cursor) == items[-1]["id"]
            else:
                # a search the index cannot serve may stop where it read its most for a page
                assert not items or decode_cursor(cursor) <= items[-1]["id"]
    assert shown == expected
    if params == {"q": "nowhere at all"}:
        assert expected == []
    elif "\x1f" not in params.get("q", ""):
        assert expected, "a filter that picks nothing here proves little"


def test_a_search_across_two_columns_finds_nothing(engine: Engine, log: list[Message]) -> None:
    with Session(engine) as session:
        row = session.get_one(Message, log[0].id)
        row.channel, row.body, row.subject = "email", None, "head of a subject"
        row.text = "the tail of a body"
        session.commit()
        assert message_log.page(session, MessageFilter(q="tail of a body"), 1000, None)
        assert message_log.page(session, MessageFilter(q="head of a subject"), 1000, None)
        assert not message_log.page(session, MessageFilter(q="body\x1fhead"), 1000, None)
        assert not message_log.page(session, MessageFilter(q="tail of a bodyhead"), 1000, None)


def test_the_text_search_reads_its_trigram_index(postgres_engine: Engine) -> None:
    """The search reads `message_search` by its trigram index (PostgreSQL would read every
    row otherwise): with scans of tables and of other indexes ruled out, the plan finds it."""
    criteria = MessageFilter(q="尾号7890")
    statement = message_log.ids_statement(criteria, 51, None)
    sql = str(
        statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    with postgres_engine.connect() as connection:
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        connection.execute(text("SET LOCAL enable_indexscan = off"))
        plan = "\n".join(connection.execute(text(f"EXPLAIN {sql}")).scalars())
    assert "ix_message_search_searched" in plan, plan
