"""`outreach campaign …` (SPEC §8, §9) on real PostgreSQL and Redis: the commands a person
runs from a terminal, their tables and their JSON (the same as the HTTP API's), their exits,
and what they leave in the database, in Redis and in the audit log."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from outreach.cli import app
from outreach.policy import load_policy
from outreach.service import campaigns
from outreach.service.apply import ingest_many
from outreach.service.parse import parse_event
from outreach.store.db import make_session_factory, transaction
from outreach.store.models import AuditEntry, Campaign, Message
from tests.conftest import REDIS_URL, REPO_ROOT, truncate_all
from tests.factories import (
    borrower_upserted,
    iso,
    loan_updated,
    payment_received,
    zone_at_local_hour,
)
from tests.live import ADMIN_TOKEN, LiveService, start_live_service
from tests.support import clean_env, free_port, run_outreach, running

POLICY_PATH = REPO_ROOT / "schedules" / "default.yaml"
SETTING_PREFIXES = ("OUTREACH_", "TWILIO_", "SMTP_", "EMAIL_")


@dataclass
class Book:
    """The database and Redis the commands run on, with a loan book in them."""

    env: dict[str, str | None]
    sessions: sessionmaker[Session]

    def cli(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, ["campaign", *args], input=input, env=self.env)

    def ingest(self, events: Sequence[dict[str, Any]]) -> None:
        policy = load_policy(POLICY_PATH)
        with transaction(self.sessions) as session:
            ingest_many(session, policy, [parse_event(e) for e in events], dt.datetime.now(dt.UTC))

    def count(self, model: Any, **where: Any) -> int:
        with self.sessions() as session:
            query = select(func.count()).select_from(model)
            for name, value in where.items():
                query = query.where(getattr(model, name) == value)
            return int(session.execute(query).scalar_one())

    def audit(self, campaign_id: str) -> list[tuple[str, str, str, str | None]]:
        """(actor, action, outcome, the status a refusal named), oldest first."""
        with self.sessions() as session:
            entries = session.scalars(
                select(AuditEntry).where(AuditEntry.target == campaign_id).order_by(AuditEntry.id)
            )
            return [
                (
                    e.actor,
                    e.action,
                    e.outcome,
                    (e.detail or {}).get("status") if e.outcome == "refused" else None,
                )
                for e in entries
            ]


def daytime_borrower(
    borrower_id: str, loan_id: str, *, dpd: int = 27, **options: Any
) -> list[dict[str, Any]]:
    """A borrower for whom it is early afternoon now, with one loan `dpd` days past due."""
    return [
        borrower_upserted(
            borrower_id,
            timezone=zone_at_local_hour(14),
            email=f"{borrower_id}@example.com",
            **options,
        ),
        loan_updated(loan_id, borrower_id, days_past_due=dpd),
    ]


def small_book() -> list[dict[str, Any]]:
    """The book most tests use: five borrowers in the negotiation stage (one without consent
    to email) and one in the early stage, outside the segment; built when the test starts, as
    whose afternoon it is depends on the hour."""
    return [
        *daytime_borrower("b-1", "l-1", name="Ada Lovelace"),
        *daytime_borrower("b-2", "l-2"),
        *daytime_borrower("b-3", "l-3"),
        *daytime_borrower("b-4", "l-4", locale="zh-CN"),
        *daytime_borrower("b-nc", "l-nc", email_consent=False),
        *daytime_borrower("b-early", "l-early", dpd=3),
    ]


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


@pytest.fixture
def book(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[Book]:
    truncate_all(postgres_engine)
    # none of the developer's own settings, but the test run's (its Redis database)
    env: dict[str, str | None] = {
        k: None
        for k in os.environ
        if k.startswith(SETTING_PREFIXES) and not k.startswith("OUTREACH_TEST_")
    }
    env.update(
        OUTREACH_DATABASE_URL=postgres_engine.url.render_as_string(hide_password=False),
        OUTREACH_REDIS_URL=REDIS_URL,
        OUTREACH_POLICY=str(POLICY_PATH),
    )
    made = Book(env, make_session_factory(postgres_engine))
    made.ingest(small_book())
    yield made
    truncate_all(postgres_engine)


@pytest.fixture
def served(book: Book) -> Iterator[LiveService]:
    """The HTTP API on the same database and Redis, to hold the commands' JSON against (no
    worker: nothing is sent behind the test's back)."""
    url = book.env["OUTREACH_DATABASE_URL"]
    assert url is not None
    for live in start_live_service(url, REDIS_URL, run_worker=False):
        live.client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        # the unsubscribe link in a preview's samples is on the service's public address
        book.env["OUTREACH_PUBLIC_URL"] = live.base_url
        yield live


def write_body(tmp_path: Path, body: Any) -> str:
    path = tmp_path / "campaign.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


def created_id(book: Book, *args: str, body: dict[str, Any] | None = None) -> str:
    result = book.cli("create", "-", "--json", *args, input=json.dumps(body or campaign_body()))
    assert result.exit_code == 0, result.output
    campaign_id: str = json.loads(result.stdout)["id"]
    return campaign_id


def one_line(result: Result) -> str:
    """The one line a refused command prints on stderr, with nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- create -----------------------------------------------------------------------------------


def test_create_from_a_file_and_from_stdin(book: Book, tmp_path: Path) -> None:
    from_file = book.cli("create", write_body(tmp_path, campaign_body()), "--as", "alice")
    assert from_file.exit_code == 0, from_file.output
    table = dict(line.split(None, 1) for line in from_file.stdout.splitlines())
    assert table["status"] == "draft"
    assert table["name"] == "Hardship relief, December"
    assert table["template"] == "campaign_hardship_relief"
    assert table["segment"] == "stages=negotiation"
    assert table["created"].endswith(" by alice")
    first = table["id"]

    body = campaign_body(
        name="A/B, SMS",
        channel="sms",
        template=None,
        variants=[
            {"name": "relief", "template": "campaign_hardship_relief", "weight": 1},
            {"name": "offer", "template": "campaign_restructuring_offer", "weight": 2},
        ],
        holdout_percent=10,
        throttle_per_minute=60,
    )
    del body["template"]
    from_stdin = book.cli("create", "-", "--json", input=json.dumps(body))
    assert from_stdin.exit_code == 0, from_stdin.output
    created = json.loads(from_stdin.stdout)
    assert created["status"] == "draft"
    assert created["channel"] == "sms"
    assert [v["name"] for v in created["variants"]] == ["relief", "offer"]
    assert created["holdout_percent"] == 10
    assert created["throttle_per_minute"] == 60
    # who acts, unless --as says otherwise: the OS user, marked as coming from the terminal
    assert created["created_by"] == f"cli:{getpass.getuser()}"

    assert book.count(Campaign) == 2
    assert book.audit(first) == [("alice", "campaign.create", "ok", None)]
    assert book.audit(created["id"]) == [
        (f"cli:{getpass.getuser()}", "campaign.create", "ok", None)
    ]


def test_a_bad_body_names_every_field_on_its_own_line_and_creates_nothing(
    book: Book, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    body = {
        "name": "",
        "channel": "fax",
        "template": "early_first_notice",
        "segment": {"stages": ["overdue"], "colour": "red"},
        "start_at": iso(now + dt.timedelta(hours=2)),
        "end_at": iso(now + dt.timedelta(hours=1)),
        "holdout_percent": 80,
    }
    result = book.cli("create", write_body(tmp_path, body))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    fields = [line.split(": ", 1)[0] for line in lines]
    assert set(fields) == {
        "name",
        "channel",
        "template",
        "segment.stages",
        "segment.colour",
        "end_at",
        "holdout_percent",
    }, result.stderr
    assert "segment.stages: unknown stage 'overdue'" in result.stderr
    assert "Traceback" not in result.output

    # --json: the API's 422 body on stdout as well, for scripts
    as_json = book.cli("create", "-", "--json", input=json.dumps(body))
    assert as_json.exit_code == 1
    problem = json.loads(as_json.stdout)
    assert {e["field"] for e in problem["errors"]} == set(fields)
    assert len(as_json.stderr.strip().splitlines()) == len(lines)

    not_json = book.cli("create", "-", input='{"name": ')
    assert one_line(not_json).startswith("body: is not JSON")
    not_an_object = book.cli("create", "-", input="[1, 2]")
    assert one_line(not_an_object) == "body: must be a JSON object"

    assert book.count(Campaign) == 0
    assert book.count(AuditEntry) == 0


def test_a_file_that_is_not_there_or_a_bad_actor_is_a_usage_error(
    book: Book, tmp_path: Path
) -> None:
    missing = book.cli("create", str(tmp_path / "nowhere.json"))
    assert missing.exit_code == 2
    assert "nowhere.json" in missing.output
    nameless = book.cli("create", write_body(tmp_path, campaign_body()), "--as", " ")
    assert nameless.exit_code == 2
    assert "--as" in nameless.output
    assert book.count(Campaign) == 0


# -- preview and launch -----------------------------------------------------------------------


def test_preview_gives_the_figures_and_the_samples_and_changes_nothing(book: Book) -> None:
    campaign_id = created_id(book)
    result = book.cli("preview", campaign_id, "--json")
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert preview["campaign_id"] == campaign_id
    assert preview["targeted"] == 5  # b-early is in the early stage, outside the segment
    assert preview["eligible"] == 4
    assert preview["holdout"] == 0
    assert preview["suppressed"] == {"no_consent": 1}
    assert preview["variants"] == {"default": 4}
    locales = sorted(sample["locale"] for sample in preview["samples"])
    assert locales == ["en-US", "en-US", "zh-CN"]

    table = book.cli("preview", campaign_id)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"preview of {campaign_id} as at ")
    assert lines[1] == "targeted 5, eligible 4, holdout 0"
    assert lines[2:4] == ["suppressed by reason:", "  no_consent  1"]
    deferred = preview["deferred"]
    if deferred:
        assert "deferred by reason:" in lines
        for reason, count in deferred.items():
            assert f"  {reason}  {count}" in lines
    else:
        assert "deferred by reason: none" in lines
    assert "messages per variant:" in lines
    assert "  default  4" in lines
    assert f"samples ({len(preview['samples'])})" in lines
    for sample in preview["samples"]:
        assert f"    Subject: {sample['subject']}" in lines
        for text_line in sample["text"].splitlines():
            assert f"    {text_line}".rstrip() in lines
    assert any("Ada Lovelace" in line for line in lines)

    assert book.count(Message, campaign_id=campaign_id) == 0
    with book.sessions() as session:
        assert session.get(Campaign, campaign_id).status == "draft"  # type: ignore[union-attr]


def test_launch_writes_the_messages_and_a_second_launch_is_refused_naming_the_status(
    book: Book,
) -> None:
    now_id = created_id(book)
    launched = book.cli("launch", now_id, "--as", "bob", "--json")
    assert launched.exit_code == 0, launched.output
    campaign = json.loads(launched.stdout)
    assert campaign["status"] == "running"
    assert campaign["launched_by"] == "bob"
    assert campaign["progress"]["targeted"] == 5
    assert campaign["progress"]["by_reason"].get("no_consent") == 1
    # one message per targeted borrower (none held out): four to go, one suppressed
    assert book.count(Message, campaign_id=now_id) == 5
    assert book.count(Message, campaign_id=now_id, status="suppressed") == 1

    again = book.cli("launch", now_id, "--as", "bob")
    line = one_line(again)
    assert "is running" in line
    assert now_id in line
    assert book.count(Message, campaign_id=now_id) == 5
    assert book.audit(now_id) == [
        (f"cli:{getpass.getuser()}", "campaign.create", "ok", None),
        ("bob", "campaign.launch", "ok", None),
        ("bob", "campaign.launch", "refused", "running"),
    ]
    as_json = book.cli("launch", now_id, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["status"] == "running"

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    later_id = created_id(book, body=campaign_body(start_at=iso(later)))
    table = book.cli("launch", later_id)
    assert table.exit_code == 0, table.output
    assert "status     scheduled" in table.stdout.splitlines()
    assert book.count(Message, campaign_id=later_id) == 5


def test_pause_resume_and_cancel_move_the_status_and_hold_the_messages(
    book: Book, redis_client: redis.Redis
) -> None:
    campaign_id = created_id(book)
    assert book.cli("launch", campaign_id).exit_code == 0
    halted = f"outreach:campaign:{campaign_id}:halted"

    paused = book.cli("pause", campaign_id, "--as", "carol")
    assert paused.exit_code == 0, paused.output
    assert "status     paused" in paused.stdout.splitlines()
    assert redis_client.get(halted) == b"1"  # what every worker checks at hand-over
    assert "is paused" in one_line(book.cli("pause", campaign_id, "--as", "carol"))

    resumed = book.cli("resume", campaign_id, "--as", "carol", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "running"
    assert redis_client.get(halted) is None

    cancelled = book.cli("cancel", campaign_id, "--as", "dave", "--json")
    assert cancelled.exit_code == 0, cancelled.output
    document = json.loads(cancelled.stdout)
    assert document["status"] == "cancelled"
    assert document["finished_at"] is not None
    assert redis_client.get(halted) == b"1"
    assert book.count(Message, campaign_id=campaign_id, reason="campaign_cancelled") == 4
    assert book.count(Message, campaign_id=campaign_id, status="suppressed") == 5

    assert "is cancelled" in one_line(book.cli("resume", campaign_id, "--as", "dave"))
    assert "is cancelled" in one_line(book.cli("cancel", campaign_id, "--as", "dave"))
    assert book.audit(campaign_id)[2:] == [
        ("carol", "campaign.pause", "ok", None),
        ("carol", "campaign.pause", "refused", "paused"),
        ("carol", "campaign.resume", "ok", None),
        ("dave", "campaign.cancel", "ok", None),
        ("dave", "campaign.resume", "refused", "cancelled"),
        ("dave", "campaign.cancel", "refused", "cancelled"),
    ]


def test_an_unknown_campaign_is_one_line(book: Book) -> None:
    for command in ("show", "preview", "launch", "pause", "resume", "cancel"):
        assert one_line(book.cli(command, "cmp_nope")) == "outreach: no campaign cmp_nope"
    assert book.count(AuditEntry) == 0


# -- list and show ----------------------------------------------------------------------------


def test_list_and_show_as_tables(book: Book) -> None:
    draft = created_id(book, body=campaign_body(name="Still a draft"))
    running = created_id(book, body=campaign_body(name="Under way"))
    assert book.cli("launch", running, "--as", "erin").exit_code == 0

    listed = book.cli("list")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["id", "name", "status", "channel", "targeted", "sent", "start_at"]
    cells = {row.split()[0]: row for row in rows}
    assert set(cells) == {draft, running}
    assert "Still a draft" in cells[draft]
    assert cells[running].split()[-5:-1] == ["running", "email", "5", "0"]
    assert cells[draft].split()[-5:-1] == ["draft", "email", "0", "0"]

    only_drafts = book.cli("list", "--status", "draft")
    assert [row.split()[0] for row in only_drafts.stdout.splitlines()[1:]] == [draft]
    assert book.cli("list", "--status", "paused").stdout.strip() == (
        "no campaigns with status paused"
    )
    assert book.cli("list", "--status", "stopped").exit_code == 2

    shown = book.cli("show", running)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert f"id         {running}" in lines
    assert "status     running" in lines
    assert "targeted 5, eligible 4, holdout 0" in lines
    assert "messages by reason:" in lines
    assert any(line.split() == ["no_consent", "1"] for line in lines)
    arm = json.loads(book.cli("show", running, "--json").stdout)["progress"]["variants"]["default"]
    variant_rows = [line.split() for line in lines if line.strip().startswith("default ")]
    assert arm["paid_amount"] == {}
    assert variant_rows == [["default", "5", "0", "0", "0", "0", "-"]]
    assert "comparison: no comparison yet: two arms need members to compare" in lines
    audit_rows = [line.split()[1:] for line in lines[lines.index("audit") + 2 :]]
    assert audit_rows == [
        [f"cli:{getpass.getuser()}", "campaign.create", "ok"],
        ["erin", "campaign.launch", "ok"],
    ]


def test_the_json_is_what_the_http_api_answers(book: Book, served: LiveService) -> None:
    api = served.client
    later = iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    draft = created_id(book, body=campaign_body(name="Draft", start_at=later))
    scheduled = created_id(book, body=campaign_body(name="Scheduled", start_at=later))
    assert book.cli("launch", scheduled).exit_code == 0

    listed = book.cli("list", "--json")
    assert json.loads(listed.stdout) == api.get("/v1/campaigns").json()
    drafts = book.cli("list", "--status", "draft", "--json")
    assert json.loads(drafts.stdout) == api.get("/v1/campaigns", params={"status": "draft"}).json()
    shown = book.cli("show", scheduled, "--json")
    assert json.loads(shown.stdout) == api.get(f"/v1/campaigns/{scheduled}").json()
    # as at the start (two days ahead) for both, so the two previews plan the same instant
    previewed = book.cli("preview", draft, "--json")
    assert json.loads(previewed.stdout) == api.post(f"/v1/campaigns/{draft}/preview").json()
    paused = book.cli("pause", scheduled, "--json")
    assert json.loads(paused.stdout) == api.get(f"/v1/campaigns/{scheduled}").json()

    refused = book.cli("resume", draft, "--json")
    answer = api.post(f"/v1/campaigns/{draft}/resume")
    assert answer.status_code == 409
    assert json.loads(refused.stdout) == answer.json()
    missing = book.cli("show", "cmp_nope", "--json")
    assert json.loads(missing.stdout) == api.get("/v1/campaigns/cmp_nope").json()


def test_show_attributes_payments_per_arm_and_compares_them(book: Book) -> None:
    book.ingest([event for n in range(40) for event in daytime_borrower(f"b-ab-{n}", f"l-ab-{n}")])
    body = campaign_body(
        variants=[
            {"name": "relief", "template": "campaign_hardship_relief", "weight": 1},
            {"name": "offer", "template": "campaign_restructuring_offer", "weight": 1},
        ],
        holdout_percent=30,
    )
    del body["template"]
    campaign_id = created_id(book, body=body)
    assert book.cli("launch", campaign_id).exit_code == 0
    with transaction(book.sessions) as session:
        launched_at = session.get(Campaign, campaign_id).launched_at  # type: ignore[union-attr]
        # handed over at launch, as a worker would have
        session.execute(
            update(Message)
            .where(Message.campaign_id == campaign_id, Message.status != "suppressed")
            .values(status="sent", sent_at=launched_at)
        )
    paying = [f"l-ab-{n}" for n in range(0, 40, 3)]
    book.ingest(
        [payment_received(loan, amount="50.00", amount_due_after="200.00") for loan in paying]
    )

    result = book.cli("show", campaign_id, "--json")
    assert result.exit_code == 0, result.output
    progress = json.loads(result.stdout)["progress"]
    arms = progress["variants"]
    assert set(arms) == {"relief", "offer"}
    assert sum(arm["paid"] for arm in arms.values()) + progress["holdout_paid"] == len(paying)
    assert progress["holdout"] > 0
    comparison = progress["comparison"]
    assert comparison is not None and comparison["p_value"] is not None

    lines = book.cli("show", campaign_id).stdout.splitlines()
    for name, arm in arms.items():
        row = next(line.split() for line in lines if line.strip().startswith(f"{name} "))
        amount = campaigns.amounts_text(arm["paid_amount"]).split()
        assert row[1 : 5 + len(amount)] == [
            str(arm["messages"]),
            str(arm["sent"]),
            str(arm["delivered"]),
            str(arm["paid"]),
            *amount,
        ]
    holdout_row = next(line.split() for line in lines if line.strip().startswith("(holdout)"))
    held_amount = campaigns.amounts_text(progress["holdout_paid_amount"]).split()
    assert holdout_row[4 : 5 + len(held_amount)] == [str(progress["holdout_paid"]), *held_amount]
    summary = next(line for line in lines if line.startswith("comparison: "))
    assert summary == "comparison: " + campaigns.comparison_text(comparison)
    assert f"p = {comparison['p_value']}" in summary


# -- on the embedded defaults -----------------------------------------------------------------


def test_on_the_embedded_defaults_it_shares_the_redis_of_outreach_run(tmp_path: Path) -> None:
    """No OUTREACH_REDIS_URL: the command uses the embedded Redis under var/ that a running
    `outreach run` uses, and leaves it running when it ends."""
    port = free_port()
    env = clean_env()
    (tmp_path / "body.json").write_text(json.dumps(campaign_body()), encoding="utf-8")
    with running("run", "--port", str(port), cwd=tmp_path, env=env, port=port):
        base = f"http://127.0.0.1:{port}"
        created = run_outreach("campaign", "create", "body.json", "--json", cwd=tmp_path, env=env)
        assert created.returncode == 0, created.stderr
        campaign_id = json.loads(created.stdout)["id"]
        cancelled = run_outreach("campaign", "cancel", campaign_id, cwd=tmp_path, env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        ready = httpx.get(f"{base}/ready")
        assert ready.json()["checks"]["redis"] == "ok", ready.text
        token = (tmp_path / "var" / "admin_token").read_text().strip()
        seen = httpx.get(
            f"{base}/v1/campaigns/{campaign_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert seen.json()["status"] == "cancelled"
