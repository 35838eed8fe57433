"""A cease-contact request allows exactly one message, its confirmation: on the channel the
policy names for it (email: a written confirmation), on the other one only when the borrower
cannot receive that, and never silently dropped (SPEC §5)."""

from __future__ import annotations

from typing import Any

from tests.factories import borrower_upserted, envelope, zone_at_local_hour
from tests.live import LiveService


def cease(live: LiveService, borrower_id: str) -> None:
    live.post_event(
        envelope(
            "contact.restricted",
            {"borrower_id": borrower_id, "restriction": "cease_contact", "active": True},
        )
    )


def confirmation(live: LiveService, borrower_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = live.wait_for(
        lambda: live.messages(borrower_id=borrower_id, purpose="cease_confirmation")
    )
    assert len(found) == 1, found
    return found[0]


def test_the_confirmation_goes_in_writing_and_falls_back_only_when_it_must(
    live: LiveService,
) -> None:
    daytime = zone_at_local_hour(11)
    live.post_event(borrower_upserted("b-both", timezone=daytime, email="both@example.com"))
    live.post_event(borrower_upserted("b-phone", timezone=daytime))
    live.post_event(
        borrower_upserted(
            "b-none", timezone=daytime, email="none@example.com", sms=False, email_consent=False
        )
    )
    for borrower_id in ("b-both", "b-phone", "b-none"):
        cease(live, borrower_id)

    written = confirmation(live, "b-both")
    assert written["channel"] == "email"
    assert written["template"] == "cease_confirmation"
    by_text = confirmation(live, "b-phone")
    assert by_text["channel"] == "sms"
    assert by_text["fallback_from"] == "email"
    # reachable on neither: a message that says why it did not go
    unreachable = confirmation(live, "b-none")
    assert unreachable["status"] == "suppressed"
    assert unreachable["reason"] == "no_consent"
