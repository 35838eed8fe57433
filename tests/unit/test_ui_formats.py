"""What the pages say in words: every reason code, a step's details, the access log without
the text search."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from outreach.domain import Reason
from outreach.render.filters import mask_recipient
from outreach.ui.formats import REASON_WORDS, detail_words, local, step_words, utc
from outreach.ui.pages import HideSearchText


def test_every_reason_code_has_words() -> None:
    assert set(REASON_WORDS) == set(Reason)
    assert all(words and "_" not in words for words in REASON_WORDS.values())


def test_a_quiet_hours_deferral_reads_as_a_sentence() -> None:
    step = {
        "status": "deferred",
        "reason": "quiet_hours",
        "detail": "until=2026-12-04T00:00:00+00:00 zone=Asia/Taipei",
    }
    assert step_words(step) == "quiet hours until 08:00 Asia/Taipei, Fri 4 Dec"


def test_details_in_words() -> None:
    assert detail_words("rule=sms_per_day until=2026-12-04T01:00:00+00:00") == (
        "rule sms per day, until 01:00 UTC, Fri 4 Dec"
    )
    assert detail_words("code=21211") == "provider code 21211"
    assert detail_words("key=dunning:l-1:2026-11-17:early:d1:early_first_notice") == ""
    # a value may hold spaces; free text stays as it is
    assert detail_words("detail=a later step is due by=msg_1") == (
        "a later step is due, replaced by msg_1"
    )
    assert detail_words("borrower called, paying today") == "borrower called, paying today"
    shanghai = ZoneInfo("Asia/Shanghai")
    assert detail_words("until=2026-12-04T00:00:00Z", shanghai) == (
        "until 08:00 Asia/Shanghai, Fri 4 Dec"
    )


def test_instants_in_utc_and_on_the_borrowers_clock() -> None:
    assert utc("2026-12-03T14:05:00Z") == "2026-12-03 14:05 UTC"
    assert local("2026-12-03T14:05:00Z", "Asia/Taipei") == "Thu 3 Dec 22:05 Asia/Taipei"


def test_recipients_are_masked() -> None:
    assert mask_recipient("+15005550006") == "****0006"
    assert mask_recipient("alex.chen@example.org") == "a***@example.org"
    assert mask_recipient(None) == ""


def test_the_access_log_leaves_out_the_text_search() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/ui/messages?status=sent&q=Mei+Lin&channel=sms", "1.1", 200),
        None,
    )
    assert HideSearchText().filter(record)
    assert record.getMessage() == (
        '127.0.0.1:5000 - "GET /ui/messages?status=sent&q=…&channel=sms HTTP/1.1" 200'
    )
