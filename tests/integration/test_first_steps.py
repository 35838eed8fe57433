"""A newcomer's first minutes (README "First ten minutes"): `outreach run` in a fresh clone
prints what to try next, and the printed commands, typed as printed, post the shipped book
and show every kind of message the service sends."""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from outreach.domain import Purpose
from tests.conftest import REPO_ROOT
from tests.support import clean_env, free_port, run_outreach, running

# each kind of message the book is written to show: every purpose but a campaign's (no
# event launches one) and an opt-in's confirmation (no START in the book)
EXPECTED_PURPOSES = {purpose.value for purpose in Purpose} - {"campaign", "optin_confirmation"}
# held back by a rule, each with its reason (nothing disappears without one)
EXPECTED_WITHHELD = {
    ("suppressed", "promise_pending"),
    ("suppressed", "payment_plan_active"),
    ("suppressed", "cease_contact"),
    ("cancelled", "loan_current"),
}


def printed_line(output: str, start: str) -> str:
    for line in output.splitlines():
        if line.strip().startswith(start):
            return line.strip()
    raise AssertionError(f"no line starting {start!r} in:\n{output}")


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_the_printed_first_steps_show_every_kind_of_message(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copytree(REPO_ROOT / "examples", clone / "examples")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output_path = tmp_path / "run.log"
    with running(
        "run", "--port", str(port), cwd=clone, env=clean_env(), port=port, output=output_path
    ):
        printed = output_path.read_text()
        token = printed_line(printed, "Admin token").rsplit(": ", 1)[1]
        assert printed_line(printed, "open ") == (
            f"open {url}/ui/ and log in with the admin token above"
        )

        # the command exactly as printed, from the same directory
        command = printed_line(printed, "outreach events post").split("#")[0]
        words = shlex.split(command)
        assert words[:3] == ["outreach", "events", "post"]
        posted = run_outreach(*words[1:], cwd=clone)
        assert posted.returncode == 0, posted.stderr
        assert "invalid, 2 replies" in posted.stdout and " 0 invalid" in posted.stdout

        def messages() -> list[dict[str, Any]]:
            answer = httpx.get(
                f"{url}/v1/messages",
                params={"limit": 500},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            items: list[dict[str, Any]] = answer.json()["items"]
            return items

        def every_kind_shown() -> list[dict[str, Any]] | None:
            found = messages()
            purposes = {m["purpose"] for m in found}
            withheld = {(m["status"], m["reason"]) for m in found}
            replies_out = {
                m["purpose"]
                for m in found
                if m["purpose"] in ("optout_confirmation", "help_reply") and m["status"] == "sent"
            }
            complete = (
                purposes >= EXPECTED_PURPOSES
                and withheld >= EXPECTED_WITHHELD
                and len(replies_out) == 2
            )
            return found if complete else None

        shown = wait_for(every_kind_shown, 60, "every kind of message")
        # whatever the hour: sent, or waiting for the borrower's daytime with its reason
        assert {m["status"] for m in shown} <= {
            "scheduled",
            "deferred",
            "queued",
            "sending",
            "sent",
            "delivered",
            "suppressed",
            "cancelled",
        }
        assert all(m["reason"] for m in shown)
        # the STOP's borrower hears nothing more by SMS
        stopped = [m for m in shown if m["borrower_id"] == "fs-us-2" and m["channel"] == "sms"]
        assert {m["purpose"] for m in stopped if m["status"] in ("scheduled", "deferred")} == set()

        # posted again: the same events and replies, recorded once
        again = run_outreach(*words[1:], cwd=clone)
        assert again.returncode == 0, again.stderr
        assert "0 accepted, 31 duplicate, 0 invalid, 2 replies" in again.stdout
        time.sleep(2)
        assert len(messages()) == len(shown)

        # the service's address leads to the pages
        root = httpx.get(url + "/", timeout=10)
        assert root.status_code == 303 and root.headers["location"] == "/ui/"
        listed = run_outreach("messages", "list", cwd=clone)
        assert listed.returncode == 0, listed.stderr
        assert "fs-us-1" in listed.stdout
