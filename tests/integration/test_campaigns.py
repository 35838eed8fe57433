"""Campaigns through the running app (SPEC §8): create, preview, launch, pause, resume,
cancel and progress, on real PostgreSQL and Redis, every rule of §5 holding."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import Engine, func, insert, select

from outreach.service.apply import ingest_many
from outreach.service.parse import parse_event
from outreach.store.db import transaction
from outreach.store.models import Borrower, Campaign, CampaignMember, Loan, Message
from tests.factories import (
    borrower_upserted,
    envelope,
    iso,
    loan_updated,
    payment_received,
    zone_at_local_hour,
)
from tests.integration.conftest import serve
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, LiveService

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


def post(live: LiveService, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> Any:
    return live.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


def campaign_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Hardship relief, December",
        "channel": "email",
        "template": "campaign_hardship_relief",
        "segment": {"stages": ["negotiation"]},
        "start_at": iso(dt.datetime.now(dt.UTC)),
    }
    body.update(overrides)
    return body


def load_book(live: LiveService, events: list[dict[str, Any]]) -> None:
    """Apply events as the webhook would, in one transaction (faster than one POST each)."""
    now = dt.datetime.now(dt.UTC)
    services = live.services
    with transaction(services.runtime.sessions) as session:
        ingest_many(session, services.policy, [parse_event(event) for event in events], now)


def daytime_borrower(
    borrower_id: str, loan_id: str, *, dpd: int = 27, hour: int = 14, **options: Any
) -> list[dict[str, Any]]:
    zone = options.pop("timezone", zone_at_local_hour(hour))
    return [
        borrower_upserted(
            borrower_id, timezone=zone, email=f"{borrower_id}@example.com", **options
        ),
        loan_updated(loan_id, borrower_id, days_past_due=dpd),
    ]


def borrower_zones(events: list[dict[str, Any]]) -> dict[str, str]:
    return {
        event["data"]["borrower"]["id"]: event["data"]["borrower"]["timezone"]
        for event in events
        if event["type"] == "borrower.upserted"
    }


def count_messages(live: LiveService, **where: Any) -> int:
    with live.services.runtime.sessions() as session:
        query = select(func.count()).select_from(Message)
        for name, value in where.items():
            query = query.where(getattr(Message, name) == value)
        return int(session.execute(query).scalar_one())


def campaign_messages(live: LiveService, campaign_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"campaign_id": campaign_id, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = live.get("/v1/messages", **params).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


# -- bad input ------------------------------------------------------------------------------


def test_create_names_every_invalid_field_and_creates_nothing(live: LiveService) -> None:
    now = dt.datetime.now(dt.UTC)
    response = post(
        live,
        "/v1/campaigns",
        {
            "name": "x",
            "channel": "email",
            "segment": {"stages": ["overdue"], "dpd_min": 40, "dpd_max": 10, "colour": "red"},
            "variants": [
                {"name": "a", "template": "campaign_hardship_relief", "weight": 0},
                {"name": "b", "template": "no_such_template", "weight": 1},
                {"name": "c", "template": "early_first_notice", "weight": 1},
            ],
            "start_at": iso(now + dt.timedelta(hours=2)),
            "end_at": iso(now + dt.timedelta(hours=1)),
            "holdout_percent": 80,
        },
    )
    assert response.status_code == 422, response.text
    fields = {error["field"] for error in response.json()["errors"]}
    assert {
        "segment.stages",
        "segment.dpd_min",
        "segment.colour",
        "variants[0].weight",
        "variants[1].template",
        "variants[2].template",
        "end_at",
        "holdout_percent",
    } <= fields
    assert "overdue" in response.json()["detail"]
    assert post(live, "/v1/campaigns", campaign_body(channel="fax")).json()["field"] == "channel"
    assert post(live, "/v1/campaigns", [1, 2]).status_code == 422
    with live.services.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    # a viewer cannot create, a stranger is not let in
    assert post(live, "/v1/campaigns", campaign_body(), token=VIEWER_TOKEN).status_code == 403
    assert post(live, "/v1/campaigns", campaign_body(), token="nope").status_code == 401


def test_transitions_that_are_not_allowed_answer_409_with_the_status(live: LiveService) -> None:
    load_book(live, daytime_borrower("b-409", "l-409"))
    created = post(live, "/v1/campaigns", campaign_body())
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "draft" and campaign["id"].startswith("cmp_")
    cid = campaign["id"]
    assert post(live, f"/v1/campaigns/{cid}/resume").status_code == 409
    assert post(live, f"/v1/campaigns/{cid}/pause").status_code == 409
    launched = post(live, f"/v1/campaigns/{cid}/launch")
    assert launched.status_code == 200, launched.text
    assert launched.json()["status"] == "running"
    twice = post(live, f"/v1/campaigns/{cid}/launch")
    assert twice.status_code == 409
    assert twice.json()["status"] == "running"
    assert post(live, f"/v1/campaigns/{cid}/resume").status_code == 409
    assert post(live, f"/v1/campaigns/{cid}/cancel").json()["status"] == "cancelled"
    again = post(live, f"/v1/campaigns/{cid}/cancel")
    assert again.status_code == 409 and again.json()["status"] == "cancelled"
    assert post(live, "/v1/campaigns/cmp_none/launch").status_code == 404
    assert live.get(f"/v1/campaigns/{cid}", token=VIEWER_TOKEN).status_code == 200
    assert post(live, f"/v1/campaigns/{cid}/pause", token=VIEWER_TOKEN).status_code == 403

    trail = live.get("/v1/audit", target=cid).json()["items"]
    assert [(e["action"], e["outcome"]) for e in reversed(trail)] == [
        ("campaign.create", "ok"),
        ("campaign.resume", "refused"),
        ("campaign.pause", "refused"),
        ("campaign.launch", "ok"),
        ("campaign.launch", "refused"),
        ("campaign.resume", "refused"),
        ("campaign.cancel", "ok"),
        ("campaign.cancel", "refused"),
    ]
    actors = {entry["actor"] for entry in trail}
    assert len(actors) == 1 and actors.pop().startswith("admin-")
    assert live.get("/v1/audit", token=VIEWER_TOKEN).status_code == 403
    shown = live.get(f"/v1/campaigns/{cid}").json()
    assert [(step["action"], step["outcome"]) for step in shown["audit"]] == [
        (entry["action"], entry["outcome"]) for entry in reversed(trail)
    ]


# -- preview and launch ----------------------------------------------------------------------


@pytest.fixture
def varied_book(live: LiveService) -> LiveService:
    """Borrowers in negotiation that a campaign two hours ahead would reach in every way:
    daytime and night-time, capped by an email sent today, without consent, opted out,
    disputing, with a promise pending, paid up, in each locale, and one outside the segment."""
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    events: list[dict[str, Any]] = []
    for index in range(12):
        events += daytime_borrower(
            f"b-day-{index}",
            f"l-day-{index}",
            timezone=zone_at_local_hour(14, start),
            locale=("zh-CN", "zh-TW", "en-US")[index % 3],
        )
    for index in range(4):
        events += daytime_borrower(
            f"b-night-{index}", f"l-night-{index}", timezone=zone_at_local_hour(3, start)
        )
    # days past due 33: the stage's email went out today, so the caps hold a campaign email
    for index in range(3):
        events += daytime_borrower(
            f"b-capped-{index}",
            f"l-capped-{index}",
            dpd=33,
            timezone=zone_at_local_hour(14, start),
        )
    events += daytime_borrower(
        "b-noconsent", "l-noconsent", email_consent=False, timezone=zone_at_local_hour(14, start)
    )
    events += daytime_borrower("b-dispute", "l-dispute", timezone=zone_at_local_hour(14, start))
    events.append(
        envelope(
            "contact.restricted",
            {"borrower_id": "b-dispute", "restriction": "dispute", "active": True},
        )
    )
    events += daytime_borrower("b-promise", "l-promise", timezone=zone_at_local_hour(14, start))
    events.append(
        envelope(
            "promise_to_pay.created",
            {
                "loan_id": "l-promise",
                "promise_id": "p-1",
                "amount": "100.00",
                "promised_date": (dt.date.today() + dt.timedelta(days=5)).isoformat(),
            },
        )
    )
    events += daytime_borrower("b-early", "l-early", dpd=5, timezone=zone_at_local_hour(14, start))
    load_book(live, events)
    # let the cadence's emails of today go out first, so the caps know them
    live.wait_for(
        lambda: all(
            count_messages(live, status="sent", loan_id=f"l-capped-{index}", channel="email")
            for index in range(3)
        ),
        timeout=15,
    )
    return live


def test_preview_says_what_launch_then_does(varied_book: LiveService) -> None:
    live = varied_book
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    body = campaign_body(
        start_at=iso(start),
        end_at=iso(start + dt.timedelta(days=3)),
        variants=[
            {"name": "relief", "template": "campaign_hardship_relief", "weight": 1},
            {"name": "restructure", "template": "campaign_restructuring_offer", "weight": 1},
        ],
        holdout_percent=20,
    )
    del body["template"]
    cid = post(live, "/v1/campaigns", body).json()["id"]
    before = count_messages(live)
    preview = post(live, f"/v1/campaigns/{cid}/preview")
    assert preview.status_code == 200, preview.text
    figures = preview.json()
    assert count_messages(live) == before, "a preview changes nothing"
    assert figures["targeted"] == 22  # everyone in negotiation, not b-early
    assert figures["suppressed"] == {"dispute": 1, "no_consent": 1, "promise_pending": 1}
    assert set(figures["deferred"]) <= {"quiet_hours", "frequency_cap"}
    assert figures["deferred"].get("quiet_hours", 0) <= 4
    assert figures["deferred"].get("frequency_cap", 0) <= 3
    assert figures["eligible"] == 19
    assert figures["holdout"] + sum(figures["variants"].values()) == figures["eligible"]
    samples = figures["samples"]
    assert {s["variant"] for s in samples} <= {"relief", "restructure"}
    assert all(s["subject"] and s["text"] and s["html"] for s in samples)
    assert {s["locale"] for s in samples} <= {"zh-CN", "zh-TW", "en-US"}

    launched = post(live, f"/v1/campaigns/{cid}/launch")
    assert launched.status_code == 200, launched.text
    campaign = launched.json()
    assert campaign["status"] == "scheduled"
    counts = campaign["launch"]
    for name in ("targeted", "eligible", "holdout", "suppressed", "deferred", "variants"):
        assert counts[name] == figures[name], name
    messages = campaign_messages(live, cid)
    assert len(messages) == figures["targeted"] - figures["holdout"]
    withheld = Counter(m["reason"] for m in messages if m["status"] in ("suppressed", "cancelled"))
    assert dict(withheld) == figures["suppressed"]
    deferred = Counter(m["reason"] for m in messages if m["status"] == "deferred")
    assert dict(deferred) == figures["deferred"]
    assert Counter(m["variant"] for m in messages if m["status"] in ("scheduled", "deferred")) == (
        Counter({k: v for k, v in figures["variants"].items() if v})
    )
    for message in messages:
        assert message["purpose"] == "campaign" and message["campaign_id"] == cid
        assert message["stage"] == "negotiation"
        if message["reason"] == "quiet_hours":
            local = dt.datetime.fromisoformat(message["send_at"])
            zone = ZoneInfo(zone_at_local_hour(3, start))
            assert local.astimezone(zone).hour == 8
        if message["reason"] == "frequency_cap":
            assert message["borrower_id"].startswith("b-capped")
    with live.services.runtime.sessions() as session:
        held = set(
            session.scalars(
                select(CampaignMember.borrower_id).where(CampaignMember.arm == "holdout")
            )
        )
    assert len(held) == figures["holdout"]
    assert not held & {m["borrower_id"] for m in messages}
    progress = live.get(f"/v1/campaigns/{cid}").json()["progress"]
    assert progress["targeted"] == figures["targeted"]
    assert sum(progress["by_status"].values()) == len(messages)


# -- sending -------------------------------------------------------------------------------


def test_campaign_messages_go_inside_the_window_under_the_caps_and_stop_for_a_payment(
    live: LiveService,
) -> None:
    events: list[dict[str, Any]] = []
    for index in range(6):
        events += daytime_borrower(f"b-go-{index}", f"l-go-{index}")
    events += daytime_borrower("b-late", "l-late", hour=23)
    load_book(live, events)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    body = campaign_body(start_at=iso(start))
    cid = post(live, "/v1/campaigns", body).json()["id"]
    assert post(live, f"/v1/campaigns/{cid}/launch").json()["status"] == "scheduled"
    # a payment between launch and the start: that borrower's message is cancelled
    paid = live.post_event(payment_received("l-go-0", amount="250.00", amount_due_after="0"))
    assert paid.status_code == 202
    live.wait_for(lambda: count_messages(live, campaign_id=cid, status="sent") >= 5, timeout=20)
    messages = {m["borrower_id"]: m for m in campaign_messages(live, cid)}
    assert messages["b-go-0"]["status"] == "cancelled"
    assert messages["b-go-0"]["reason"] == "loan_current"
    assert messages["b-late"]["status"] == "deferred"
    assert messages["b-late"]["reason"] == "quiet_hours"
    sent_ids = {m["id"] for m in messages.values() if m["status"] == "sent"}
    assert {call.message_id for call in live.senders["email"].calls} >= sent_ids
    zones = {event_borrower: zone for event_borrower, zone in borrower_zones(events).items()}
    for message in messages.values():
        if message["sent_at"] is None:
            continue
        sent_at = dt.datetime.fromisoformat(message["sent_at"])
        assert sent_at >= start
        # inside the contact window where the borrower is
        local = sent_at.astimezone(ZoneInfo(zones[message["borrower_id"]]))
        assert 8 <= local.hour < 21, (message["borrower_id"], local)
    # every borrower's emails within the caps: at most one email a day, two messages in all
    for borrower_id in messages:
        sent = [m for m in live.messages(borrower_id=borrower_id) if m["sent_at"] is not None]
        assert sum(1 for m in sent if m["channel"] == "email") <= 1
        assert len(sent) <= 2
    assert live.wait_for(
        lambda: live.get(f"/v1/campaigns/{cid}").json()["status"] == "running", timeout=10
    )


def test_pause_holds_within_a_second_resume_goes_on_cancel_withholds_the_rest(
    live: LiveService,
) -> None:
    events: list[dict[str, Any]] = []
    for index in range(90):
        events += daytime_borrower(f"b-p-{index:02d}", f"l-p-{index:02d}")
    load_book(live, events)
    # 90 messages at 60 a minute: about one a second for a minute and a half
    body = campaign_body(start_at=iso(dt.datetime.now(dt.UTC)), throttle_per_minute=60)
    cid = post(live, "/v1/campaigns", body).json()["id"]
    assert post(live, f"/v1/campaigns/{cid}/launch").status_code == 200
    email = live.senders["email"]

    def campaign_calls() -> list[str]:
        mine = {m["id"] for m in campaign_messages(live, cid)}
        return [call.message_id for call in list(email.calls) if call.message_id in mine]

    live.wait_for(lambda: len(campaign_calls()) >= 3, timeout=20)
    paused = post(live, f"/v1/campaigns/{cid}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    calls_at_pause = len(campaign_calls())
    time.sleep(3)
    assert len(campaign_calls()) == calls_at_pause, "nothing handed over after the pause"
    now = dt.datetime.now(dt.UTC)
    for message in campaign_messages(live, cid):
        if message["sent_at"] is None and dt.datetime.fromisoformat(
            message["send_at"]
        ) < now - dt.timedelta(seconds=2):
            # came due while paused: held for the pause, not sent
            assert (message["status"], message["reason"]) == ("deferred", "campaign_paused")

    resumed = post(live, f"/v1/campaigns/{cid}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    live.wait_for(lambda: len(campaign_calls()) >= calls_at_pause + 2, timeout=15)
    cancelled = post(live, f"/v1/campaigns/{cid}/cancel")
    assert cancelled.status_code == 200
    calls_at_cancel = len(campaign_calls())
    time.sleep(2)
    assert len(campaign_calls()) == calls_at_cancel
    messages = campaign_messages(live, cid)
    unsent = [m for m in messages if m["sent_at"] is None]
    assert unsent
    assert all(m["status"] == "suppressed" and m["reason"] == "campaign_cancelled" for m in unsent)
    assert cancelled.json()["status"] == "cancelled"
    progress = live.get(f"/v1/campaigns/{cid}").json()["progress"]
    assert progress["by_reason"]["campaign_cancelled"] == len(unsent)
    # within any minute, at most the throttle's 60 went out
    times = sorted(
        dt.datetime.fromisoformat(m["sent_at"]) for m in messages if m["sent_at"] is not None
    )
    for index, first in enumerate(times):
        within = [t for t in times[index:] if t - first < dt.timedelta(minutes=1)]
        assert len(within) <= 60


# -- arms and attribution -----------------------------------------------------------------


@pytest.fixture
def big_live(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    """A live service without a worker: messages stay planned (10,000 borrowers)."""
    yield from serve(postgres_engine, run_worker=False)


def write_book(live: LiveService, count: int, zone: str) -> None:
    """`count` borrowers with an email and one loan 27 days late each, written straight into
    the tables the webhook fills (as the loan system's events would leave them): 10,000
    through the webhook would take minutes."""
    now = dt.datetime.now(dt.UTC)
    borrowers = [
        {
            "id": f"b-ab-{index:05d}",
            "name": f"Borrower {index}",
            "locale": ("zh-CN", "zh-TW", "en-US")[index % 3],
            "email": f"b-ab-{index:05d}@example.com",
            "timezone": zone,
            "consent_sms": True,
            "consent_email": True,
            "tags": [],
            "state_as_of": now,
            "created_at": now,
            "updated_at": now,
        }
        for index in range(count)
    ]
    loans = [
        {
            "id": f"l-ab-{index:05d}",
            "borrower_id": f"b-ab-{index:05d}",
            "product": "personal",
            "currency": "USD",
            "amount_due": Decimal("250.00"),
            "balance": Decimal("1800.00"),
            "days_past_due": 27,
            "due_date": (now - dt.timedelta(days=27)).date(),
            "account_number": f"ACC-{index:08d}",
            "state_as_of": now,
            "created_at": now,
            "updated_at": now,
        }
        for index in range(count)
    ]
    with transaction(live.services.runtime.sessions) as session:
        session.execute(insert(Borrower), borrowers)
        session.execute(insert(Loan), loans)


def test_arms_follow_the_weights_and_holdout_gets_nothing(big_live: LiveService) -> None:
    live = big_live
    write_book(live, 10_000, zone_at_local_hour(3))
    body = campaign_body(
        start_at=iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)),
        variants=[
            {"name": "a", "template": "campaign_hardship_relief", "weight": 3},
            {"name": "b", "template": "campaign_restructuring_offer", "weight": 1},
        ],
        holdout_percent=10,
    )
    del body["template"]
    cid = post(live, "/v1/campaigns", body).json()["id"]
    preview = post(live, f"/v1/campaigns/{cid}/preview").json()
    campaign = post(live, f"/v1/campaigns/{cid}/launch").json()
    assert campaign["launch"]["variants"] == preview["variants"]
    eligible = campaign["launch"]["eligible"]
    assert eligible == 10_000
    holdout = campaign["launch"]["holdout"]

    # a share p of n is within 4 standard deviations of p·n
    def within_noise(count: int, share: float, n: int) -> bool:
        return abs(count - share * n) <= 4 * (share * (1 - share) * n) ** 0.5

    assert within_noise(holdout, 0.10, eligible), holdout
    sent = eligible - holdout
    assert within_noise(campaign["launch"]["variants"]["a"], 0.75, sent)
    assert campaign["launch"]["variants"]["a"] + campaign["launch"]["variants"]["b"] == sent
    with live.services.runtime.sessions() as session:
        held = set(
            session.scalars(
                select(CampaignMember.borrower_id).where(
                    CampaignMember.campaign_id == cid, CampaignMember.arm == "holdout"
                )
            )
        )
        messaged = set(
            session.scalars(select(Message.borrower_id).where(Message.campaign_id == cid))
        )
    assert len(held) == holdout and not held & messaged
    assert len(messaged) == sent

    # the same campaign id and borrower always land in the same arm
    from outreach.service.campaigns import CampaignSpec, arm_of

    with live.services.runtime.sessions() as session:
        row = session.get(Campaign, cid)
        assert row is not None
        spec = CampaignSpec.of(row)
        variants = dict(
            session.execute(
                select(Message.borrower_id, Message.variant).where(Message.campaign_id == cid)
            ).all()
        )
    for borrower_id, variant in list(variants.items())[:500]:
        assert arm_of(spec, cid, borrower_id) == (
            next(v for v in spec.variants if v.name == variant),
            False,
        )


def test_payments_in_the_window_are_attributed_and_later_ones_are_not(live: LiveService) -> None:
    events: list[dict[str, Any]] = []
    for index in range(20):
        events += daytime_borrower(f"b-at-{index}", f"l-at-{index}")
    load_book(live, events)
    body = campaign_body(start_at=iso(dt.datetime.now(dt.UTC)), holdout_percent=50)
    cid = post(live, "/v1/campaigns", body).json()["id"]
    post(live, f"/v1/campaigns/{cid}/launch")
    live.wait_for(
        lambda: (
            count_messages(live, campaign_id=cid, status="sent")
            + count_messages(live, campaign_id=cid, status="delivered")
            >= 1
        ),
        timeout=20,
    )
    with live.services.runtime.sessions() as session:
        sent = session.execute(
            select(Message.loan_id, Message.sent_at).where(
                Message.campaign_id == cid, Message.sent_at.is_not(None)
            )
        ).all()
        held = (
            session.execute(
                select(CampaignMember.loan_id).where(
                    CampaignMember.campaign_id == cid, CampaignMember.arm == "holdout"
                )
            )
            .scalars()
            .all()
        )
        launched_at = session.get(Campaign, cid).launched_at  # type: ignore[union-attr]
    assert sent and held
    (in_window_loan, sent_at), *others = sent
    window = dt.timedelta(days=7)
    payments = [
        # two days after the message: the campaign's
        payment_received(
            in_window_loan,
            amount="80.00",
            amount_due_after="170.00",
            occurred_at=sent_at + dt.timedelta(days=2),
        ),
    ]
    if others:
        late_loan, late_sent = others[0]
        # eight days after: outside the window
        payments.append(
            payment_received(
                late_loan,
                amount="50.00",
                amount_due_after="200.00",
                occurred_at=late_sent + window + dt.timedelta(days=1),
            )
        )
    payments.append(
        payment_received(
            held[0],
            amount="30.00",
            amount_due_after="220.00",
            occurred_at=launched_at + dt.timedelta(days=1),
        )
    )
    if len(held) > 1:
        payments.append(
            payment_received(
                held[1],
                amount="30.00",
                amount_due_after="220.00",
                occurred_at=launched_at + window + dt.timedelta(hours=1),
            )
        )
    load_book(live, payments)
    progress = live.get(f"/v1/campaigns/{cid}").json()["progress"]
    arm = progress["variants"]["default"]
    assert arm["paid"] == 1
    assert arm["paid_amount"] == {"USD": "80.00"}
    assert progress["holdout_paid"] == 1
    assert progress["holdout_paid_amount"] == {"USD": "30.00"}
    assert progress["attribution_days"] == 7
    comparison = progress["comparison"]
    assert comparison is not None and 0 <= comparison["p_value"] <= 1
    # every borrower eligible at launch counts in its arm, over the same span
    arms = comparison["arms"]
    assert set(arms) == {"default", "holdout"}
    assert arms["default"]["paid"] == 1 and arms["holdout"]["paid"] == 1
    assert arms["holdout"]["members"] == progress["holdout"]
    assert arms["default"]["members"] == progress["eligible"] - progress["holdout"]


def test_templates_are_listed_with_their_purpose(live: LiveService) -> None:
    response = live.get("/v1/templates", token=VIEWER_TOKEN)
    assert response.status_code == 200
    items = {item["name"]: item for item in response.json()["items"]}
    for name in ("campaign_hardship_relief", "campaign_restructuring_offer"):
        assert items[name]["purpose"] == "campaign"
        assert items[name]["channels"] == ["email", "sms"]
        assert items[name]["locales"] == ["en-US", "zh-CN", "zh-TW"]
        assert len(items[name]["version"]) == 12
    assert items["early_first_notice"]["purpose"] == "dunning"


def test_the_audit_log_pages_and_filters_and_records_ops_cancellation(
    live: LiveService,
) -> None:
    load_book(live, daytime_borrower("b-au", "l-au", hour=3))
    pending = live.wait_for(
        lambda: [m for m in live.messages(loan_id="l-au") if m["status"] == "deferred"]
    )
    message_id = pending[0]["id"]
    assert post(live, f"/v1/messages/{message_id}/cancel", {"note": "asked"}).status_code == 200
    assert post(live, f"/v1/messages/{message_id}/cancel").status_code == 409
    for index in range(3):
        post(live, "/v1/campaigns", campaign_body(name=f"c{index}"))
    cancels = live.get("/v1/audit", action="message.cancel").json()["items"]
    assert [(e["target"], e["outcome"]) for e in cancels] == [
        (message_id, "refused"),
        (message_id, "ok"),
    ]
    assert cancels[1]["detail"] == {"note": "asked"}
    first = live.get("/v1/audit", limit=2).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = live.get("/v1/audit", limit=2, cursor=first["next_cursor"]).json()
    seen = [e["id"] for e in first["items"] + rest["items"]]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == len(seen)
    since = live.get("/v1/audit", since=iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    assert since.json()["items"] == []
    assert live.get("/v1/audit", since="yesterday").status_code == 422
