"""The process log (outreach/logs.py): formats, masking, the access log, outages (issue 21 §2)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from outreach.errors import ConfigurationError
from outreach.logs import (
    OUTAGES,
    AccessLogFilter,
    configure_logging,
    fields,
    redact,
    scrub,
)
from outreach.settings import load_settings


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[str]]]:
    """The root logger writing to a buffer; each test configures its format."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    lines: list[str] = []
    yield buffer, lines
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def lines_of(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def access_record(path: str, status: int) -> logging.LogRecord:
    # the shape of uvicorn's access records: (client, method, path, http version, status)
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", status),
        None,
    )


def test_the_settings_name_level_and_format_and_refuse_others() -> None:
    defaults = load_settings({})
    assert (defaults.log_level, defaults.log_format) == ("INFO", "text")
    chosen = load_settings({"OUTREACH_LOG_LEVEL": "debug", "OUTREACH_LOG_FORMAT": "JSON"})
    assert (chosen.log_level, chosen.log_format) == ("DEBUG", "json")
    for name, value in (("OUTREACH_LOG_LEVEL", "loud"), ("OUTREACH_LOG_FORMAT", "xml")):
        with pytest.raises(ConfigurationError, match=name):
            load_settings({name: value})


def test_json_lines_carry_time_level_process_message_and_fields(
    captured: tuple[io.StringIO, list[str]],
) -> None:
    buffer, _ = captured
    configure_logging("INFO", "json", "worker", stream=buffer)
    logging.getLogger("outreach.test").info("sent %d", 3, extra=fields(sent=3, to="+8613812345678"))
    try:
        raise ValueError("relay said no to ada@example.org")
    except ValueError:
        logging.getLogger("outreach.test").exception("it failed")
    first, second = (json.loads(line) for line in lines_of(buffer))
    assert first["level"] == "INFO" and first["process"] == "worker"
    assert first["message"] == "sent 3" and first["logger"] == "outreach.test"
    assert first["time"].endswith("Z") and isinstance(first["pid"], int)
    assert first["fields"] == {"sent": 3, "to": "****5678"}
    assert second["level"] == "ERROR"
    assert "a***@example.org" in second["exception"]
    assert "ada@example.org" not in buffer.getvalue()


def test_text_lines_name_the_process_and_append_fields(
    captured: tuple[io.StringIO, list[str]],
) -> None:
    buffer, _ = captured
    configure_logging("INFO", "text", "clock", stream=buffer)
    logging.getLogger("outreach.clock").info("clock is now leader", extra=fields(leader=True))
    logging.getLogger("outreach.clock").debug("not at INFO")
    (line,) = lines_of(buffer)
    assert " INFO clock[" in line
    assert line.endswith("outreach.clock: clock is now leader leader=True")


def test_at_info_apscheduler_and_the_twilio_client_are_held_back(
    captured: tuple[io.StringIO, list[str]],
) -> None:
    buffer, _ = captured
    configure_logging("INFO", "text", "clock", stream=buffer)
    logging.getLogger("apscheduler.executors.default").info('Running job "release_due"')
    logging.getLogger("twilio.http_client").info("GET Request: ...?To=%2B15005550101")
    assert lines_of(buffer) == []
    configure_logging("DEBUG", "text", "clock", stream=buffer)
    logging.getLogger("apscheduler.executors.default").info('Running job "release_due"')
    logging.getLogger("twilio.http_client").info("GET Request: ...?To=%2B15005550101")
    assert len(lines_of(buffer)) == 1


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("to ada.lovelace+bills@example.co.uk failed", "to a***@example.co.uk failed"),
        ("number +86 138 1234 5678 refused", "number ****5678 refused"),
        (
            "GET /Messages.json?To=%2B15005550101&PageSize=50",
            "GET /Messages.json?To=****0101&PageSize=50",
        ),
        ("event evt-000001-1733312312.123456 failed", "event evt-000001-1733312312.123456 failed"),
    ],
)
def test_redact_masks_addresses_and_plus_numbers_and_keeps_ids(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_scrub_removes_a_recipient_in_every_spelling() -> None:
    text = (
        "The 'To' number +8613812345678 (8613812345678, 138 1234 5678, 138-1234-5678) "
        "is not valid; 1381234567 is another"
    )
    assert scrub(text, "+8613812345678") == (
        "The 'To' number ****5678 (****5678, ****5678, ****5678) "
        "is not valid; 1381234567 is another"
    )
    assert scrub("550 5.1.1 <Ada@Example.org>: unknown", "ada@example.org") == (
        "550 5.1.1 <a***@example.org>: unknown"
    )


def test_the_access_log_leaves_out_queries_tokens_and_successful_probes() -> None:
    quiet = AccessLogFilter()
    record = access_record("/v1/messages?q=Alex%20Chen&status=sent", 200)
    assert quiet.filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/messages HTTP/1.1" 200'
    assert record.fields == {"method": "GET", "path": "/v1/messages", "status": 200}  # type: ignore[attr-defined]
    token = access_record("/v1/unsubscribe/email%3Aada%40example.org.abc123", 200)
    assert quiet.filter(token)
    assert "ada" not in token.getMessage()
    for path, shown in (
        ("/v1/borrowers/8613812345678/timeline?since=2026-01-01", "/v1/borrowers/…/timeline"),
        ("/ui/borrowers/Alex%20Chen", "/ui/borrowers/…"),
        ("/ui/messages/msg_01?q=%2B8613812345678&borrower_id=Alex", "/ui/messages/msg_01"),
    ):
        line = access_record(path, 200)
        assert quiet.filter(line)
        assert line.getMessage() == f'127.0.0.1:5000 - "GET {shown} HTTP/1.1" 200'
    for path in ("/health", "/ready", "/metrics"):
        assert not quiet.filter(access_record(path, 200))
    assert quiet.filter(access_record("/ready", 503))
    assert quiet.filter(access_record("/metrics", 401))


def test_an_outage_writes_each_repeated_warning_once_and_counts_the_rest(
    captured: tuple[io.StringIO, list[str]],
) -> None:
    buffer, _ = captured
    configure_logging("INFO", "text", "clock", stream=buffer)
    log = logging.getLogger("outreach.clock")
    OUTAGES.went_down("PostgreSQL", ConnectionRefusedError("connection refused"))
    OUTAGES.went_down("PostgreSQL", ConnectionRefusedError("connection refused"))
    for _ in range(5):
        log.warning("release skipped: %s", "database unavailable")
    log.warning("replan stopped: %s", "database unavailable")
    OUTAGES.came_back("PostgreSQL")
    log.warning("release skipped: %s", "database unavailable")
    lines = lines_of(buffer)
    assert len(lines) == 5, lines
    assert "PostgreSQL unreachable: ConnectionRefusedError: connection refused" in lines[0]
    assert lines[1].endswith("release skipped: database unavailable")
    assert lines[2].endswith("replan stopped: database unavailable")
    assert "PostgreSQL reachable again after" in lines[3]
    assert "(4 repeated warnings left out meanwhile)" in lines[3]
    assert lines[4].endswith("release skipped: database unavailable")
