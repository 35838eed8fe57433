"""uvicorn's access log keeps every line but those of accepted and duplicate events (each of
those is in the inbox with its time and outcome)."""

from __future__ import annotations

import logging

import pytest

from outreach.api.webhook import QuietAcceptedEvents


def access_line(method: str, path: str, status: int) -> logging.LogRecord:
    # the shape of uvicorn's access records: (client, method, path, http version, status)
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", method, path, "1.1", status),
        None,
    )


@pytest.mark.parametrize("status", [200, 202])
def test_accepted_and_duplicate_events_are_not_logged(status: int) -> None:
    assert not QuietAcceptedEvents().filter(access_line("POST", "/v1/events", status))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/events", 401),
        ("POST", "/v1/events", 413),
        ("POST", "/v1/events", 422),
        ("POST", "/v1/events", 503),
        ("GET", "/v1/events", 405),
        ("POST", "/v1/events/extra", 404),
        ("GET", "/v1/messages", 200),
        ("POST", "/v1/providers/twilio/status", 200),
    ],
)
def test_everything_else_is_logged(method: str, path: str, status: int) -> None:
    assert QuietAcceptedEvents().filter(access_line(method, path, status))


def test_a_record_of_another_shape_is_logged() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "started", None, None)
    assert QuietAcceptedEvents().filter(record)
