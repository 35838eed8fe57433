"""A simulation split between processes writes exactly what one process writes, a campaign
launched over the whole book included."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from outreach.cli import app
from outreach.settings import Settings, load_settings
from outreach.sim import shards
from outreach.sim.book import CAMPAIGN_ID, DEMO_START, generate_book
from outreach.sim.shards import simulate_file
from outreach.sim_checks import parse_time, read_jsonl
from tests.conftest import REPO_ROOT

DAYS = 21
SHARED_PHONE = "+8613900000001"


def settings() -> Settings:
    loaded = load_settings({"OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml")})
    return dataclasses.replace(loaded, templates_dir=REPO_ROOT / "templates")


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def shared_number_story() -> list[dict[str, Any]]:
    """Two borrowers on one number; the number texts STOP on the third day."""
    events: list[dict[str, Any]] = []
    before = DEMO_START - dt.timedelta(days=1)
    for name in ("S1", "S2"):
        events.append(
            {
                "id": f"shared-{name}",
                "type": "borrower.upserted",
                "occurred_at": iso(before),
                "data": {
                    "borrower": {
                        "id": name,
                        "name": "王芳",
                        "locale": "zh-CN",
                        "phones": [SHARED_PHONE],
                        "timezone": "Asia/Shanghai",
                        "consent": {"sms": True, "email": False},
                    }
                },
            }
        )
        events.append(
            {
                "id": f"shared-loan-{name}",
                "type": "loan.updated",
                "occurred_at": iso(before),
                "data": {
                    "loan": {
                        "id": f"L-{name}",
                        "borrower_id": name,
                        "product": "personal_loan",
                        "currency": "CNY",
                        "amount_due": "800.00",
                        "balance": "5000.00",
                        "days_past_due": 2,
                        "due_date": (before.date() - dt.timedelta(days=2)).isoformat(),
                        "account_number": "6222020012345678",
                    }
                },
            }
        )
    events.append(
        {
            "type": "sms.inbound",
            "occurred_at": iso(DEMO_START + dt.timedelta(days=2, hours=4)),
            "data": {"from": SHARED_PHONE, "body": "STOP"},
        }
    )
    return events


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    events = generate_book(80, DAYS, 3, start=DEMO_START, update_every=1, campaign=True)
    events += shared_number_story()
    path = tmp_path_factory.mktemp("shards") / "EVENTS.jsonl"
    path.write_text("".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events))
    return path


@pytest.fixture(scope="module")
def runs(book: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Any]:
    directory = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shards, "SHARD_MIN_EVENTS", 0)
        return {
            jobs: simulate_file(
                settings(),
                book,
                start=DEMO_START,
                days=DAYS,
                out=directory / f"MESSAGES-{jobs}.jsonl",
                seed=5,
                jobs=jobs,
            )
            for jobs in (1, 3)
        }


def test_three_processes_write_the_same_file_as_one(runs: dict[int, Any]) -> None:
    one, three = runs[1], runs[3]
    assert one.stats.processes == 1
    assert three.stats.processes == 4  # three simulating, one merging
    text = one.out.read_text()
    assert text and three.out.read_text() == text
    assert three.stats.events == one.stats.events
    assert three.stats.replies == one.stats.replies
    assert three.stats.statuses == one.stats.statuses
    assert three.stats.peak_memory_bytes > one.stats.peak_memory_bytes > 0


def test_a_campaign_is_launched_in_every_process_as_in_one(runs: dict[int, Any]) -> None:
    one, three = runs[1], runs[3]
    messages = read_jsonl(three.out)
    of_campaign = [m for m in messages if m["campaign_id"] == CAMPAIGN_ID]
    # the campaign reaches borrowers of more than one process
    assert len({m["borrower_id"] for m in of_campaign}) > 10
    assert {m["template"] for m in of_campaign} == {
        "campaign_hardship_relief",
        "campaign_restructuring_offer",
    }
    ((single,), (merged,)) = one.stats.campaigns, three.stats.campaigns
    assert single["id"] == merged["id"] == CAMPAIGN_ID
    assert merged["progress"] == single["progress"]
    assert merged["launch"] == single["launch"]
    assert merged["status"] == single["status"]
    assert single["progress"]["holdout"] > 0
    assert sum(arm["messages"] for arm in single["progress"]["variants"].values()) == len(
        of_campaign
    )


def test_a_stop_from_a_shared_number_reaches_both_borrowers(runs: dict[int, Any]) -> None:
    messages = read_jsonl(runs[3].out)
    stop_at = DEMO_START + dt.timedelta(days=2, hours=4)
    for name in ("S1", "S2"):
        texts = [m for m in messages if m["borrower_id"] == name and m["channel"] == "sms"]
        before = [m for m in texts if m["sent_at"] and parse_time(m["sent_at"]) < stop_at]
        after = [
            m
            for m in texts
            if m["sent_at"]
            and parse_time(m["sent_at"]) > stop_at
            and m["purpose"] != "optout_confirmation"
        ]
        assert before, name  # they were being written to
        assert after == [], name
        assert any(m["reason"] == "opted_out" for m in texts if m["status"] == "suppressed"), name


def test_the_first_malformed_line_of_the_book_is_named(
    book: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "SHARD_MIN_EVENTS", 0)
    lines = book.read_text().splitlines()
    first = next(
        index
        for index, text in enumerate(lines)
        if index >= 40 and json.loads(text)["type"] == "loan.updated"
    )
    wrong_amount = json.loads(lines[first])
    wrong_amount["data"]["loan"]["amount_due"] = "lots"
    lines[first] = json.dumps(wrong_amount)
    without_data = json.loads(lines[-5])
    del without_data["data"]
    lines[-5] = json.dumps(without_data)
    broken = tmp_path / "EVENTS.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    out = tmp_path / "MESSAGES.jsonl"

    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--events",
            str(broken),
            "--start",
            iso(DEMO_START),
            "--days",
            "3",
            "--out",
            str(out),
            "--jobs",
            "3",
        ],
    )

    assert result.exit_code != 0, result.output
    (line,) = result.output.strip().splitlines()
    assert f"line {first + 1}:" in line and "amount_due" in line, line
    assert not out.exists()
