"""Splitting a book between processes: borrowers who share anything stay together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from outreach.settings import load_settings
from outreach.sim import shards
from outreach.sim.engine import compiled_renderer
from outreach.sim.shards import joining_names, plan_shards

AT = "2026-03-02T00:00:00Z"


def borrower(borrower_id: str, phones: list[str], email: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": borrower_id, "name": "n", "locale": "zh-CN", "phones": phones}
    if email is not None:
        data["email"] = email
    return {"type": "borrower.upserted", "data": {"borrower": data}}


def loan(loan_id: str, borrower_id: str) -> dict[str, Any]:
    return {"type": "loan.updated", "data": {"loan": {"id": loan_id, "borrower_id": borrower_id}}}


def about_loan(kind: str, loan_id: str) -> dict[str, Any]:
    return {"type": kind, "data": {"loan_id": loan_id}}


def write(path: Path, documents: list[dict[str, Any] | str]) -> Path:
    lines = []
    for number, document in enumerate(documents):
        if isinstance(document, str):
            lines.append(document)
        else:
            lines.append(json.dumps({"id": f"e{number}", "occurred_at": AT, **document}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def small_books_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "SHARD_MIN_EVENTS", 0)


BOOK: list[dict[str, Any] | str] = [
    borrower("A", ["+8613900000001"]),  # 1
    borrower("B", ["+8613800000002", "+8613900000001"]),  # 2: shares A's number
    borrower("C", [], "Someone@Mail.example"),  # 3
    borrower("D", [], " someone@mail.example"),  # 4: C's address, spelled otherwise
    loan("L-E", "E"),  # 5
    loan("L-E", "F"),  # 6: the loan moves to F
    about_loan("payment.received", "L-E"),  # 7
    {"type": "sms.inbound", "data": {"from": "+86 139 0000 0001", "body": "STOP"}},  # 8
    "",  # 9: blank
    borrower("G", ["+12125550143"]),  # 10
    loan("L-G", "G"),  # 11
    {"type": "contact.restricted", "data": {"borrower_id": "C", "restriction": "dispute"}},  # 12
    borrower("H", ["+12125550199"]),  # 13
]


@pytest.mark.usefixtures("small_books_split")
def test_borrowers_sharing_a_number_an_address_or_a_loan_run_together(tmp_path: Path) -> None:
    plan = plan_shards(write(tmp_path / "EVENTS.jsonl", BOOK), jobs=4)

    assert plan is not None
    shard = {number: plan.shard_of_line[number - 1] for number in range(1, len(BOOK) + 1)}
    assert shard[1] == shard[2] == shard[8]  # A, B and the reply from their number
    assert shard[3] == shard[4] == shard[12]  # C, D and C's dispute
    assert shard[5] == shard[6] == shard[7]  # the loan, both its borrowers, its payment
    assert shard[10] == shard[11]  # G and G's loan
    assert shard[9] == 255  # a blank line belongs to no process
    # five groups over four processes: every process has some
    assert set(shard.values()) - {255} == {0, 1, 2, 3}
    assert sum(plan.events) == len(BOOK) - 1


@pytest.mark.usefixtures("small_books_split")
def test_groups_are_balanced_by_events(tmp_path: Path) -> None:
    book: list[dict[str, Any] | str] = []
    for index in range(6):
        book.append(borrower(f"B{index}", [f"+86139000000{index:02d}"]))
        book.extend(loan(f"L{index}", f"B{index}") for _ in range(index + 1))
    plan = plan_shards(write(tmp_path / "EVENTS.jsonl", book), jobs=2)

    assert plan is not None
    # groups of 7, 6, 5, 4, 3, 2 events: largest first, each to the lighter process
    assert sorted(plan.events) == [13, 14]


@pytest.mark.parametrize(
    ("jobs", "book", "why"),
    [
        (1, BOOK, "one process asked for"),
        (4, [borrower("A", ["+8613900000001"]), loan("L1", "A")], "one group"),
        (4, [*BOOK[:3], "{not json", *BOOK[3:]], "a line one process must report"),
    ],
)
@pytest.mark.usefixtures("small_books_split")
def test_some_books_run_in_one_process(
    tmp_path: Path, jobs: int, book: list[dict[str, Any] | str], why: str
) -> None:
    assert plan_shards(write(tmp_path / "EVENTS.jsonl", book), jobs=jobs) is None, why


def campaign(**data: Any) -> dict[str, Any]:
    return {"type": "campaign.launched", "data": {"name": "Relief", "start_at": AT, **data}}


@pytest.mark.usefixtures("small_books_split")
def test_a_campaign_line_goes_to_every_process(tmp_path: Path) -> None:
    book = [*BOOK, campaign()]
    plan = plan_shards(write(tmp_path / "EVENTS.jsonl", book), jobs=4)

    assert plan is not None
    assert plan.shard_of_line[len(book) - 1] == 254
    # and is not counted among the events the processes are balanced by
    assert sum(plan.events) == len(BOOK) - 1


@pytest.mark.usefixtures("small_books_split")
def test_a_book_with_a_throttled_campaign_runs_in_one_process(tmp_path: Path) -> None:
    book = [*BOOK, campaign(throttle_per_minute=10)]
    assert plan_shards(write(tmp_path / "EVENTS.jsonl", book), jobs=4) is None


def test_a_small_book_runs_in_one_process(tmp_path: Path) -> None:
    assert len(BOOK) < shards.SHARD_MIN_EVENTS
    assert plan_shards(write(tmp_path / "EVENTS.jsonl", BOOK), jobs=4) is None


def test_names_of_malformed_events_are_none_rather_than_an_error() -> None:
    assert joining_names([1, 2]) == []
    assert joining_names({"type": "loan.updated", "data": {"loan": "L1"}}) == []
    assert joining_names({"type": "borrower.upserted", "data": {"borrower": {"id": "A"}}}) == [
        "b:A"
    ]


def test_templates_are_compiled_once_until_a_file_changes(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(load_settings({}).templates_dir, templates)
    first = compiled_renderer(templates)
    assert compiled_renderer(templates) is first
    sms = next(templates.glob("*/sms.en-US.j2"))
    sms.write_text(sms.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    changed = compiled_renderer(templates)
    assert changed is not first
    assert compiled_renderer(templates) is changed
