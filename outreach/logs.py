"""Every process's log: quiet by default, one line per thing worth knowing, no personal data.

`configure_logging` is called once by each process (`outreach run`, `web`, `worker`,
`clock`) with OUTREACH_LOG_LEVEL and OUTREACH_LOG_FORMAT:

- `text` (the default): `<time> <LEVEL> <process>[<pid>] <logger>: <message> key=value…`;
  `json`: one object per line, `{"time", "level", "process", "pid", "logger", "message",
  "fields", "exception"?}`, for log shippers. `fields` are what the line is about, as data
  (`extra=fields(sent=3)` at the call site; uvicorn's access lines get theirs here).
- At INFO the libraries that narrate routine work are held back: APScheduler's two lines
  per job run (every second), the twilio client's request dumps (numbers in their query
  strings), Alembic naming its database at every `/ready`; at DEBUG APScheduler speaks
  again, the twilio client never.
- uvicorn's access lines carry the path without its query string (a text search, a name,
  a number: every filter of the log), an unsubscribe link's token and a borrower's id in a
  path replaced by `…`, and none for a successful `/health`,
  `/ready` or `/metrics` (probes and scrapes every few seconds would bury the rest).
- Nothing personal at INFO: the service's own lines name messages, events and borrowers by
  id and recipients masked as the pages mask them (`render.filters.mask_recipient`:
  `****0006`, `a***@x.org`); every line is also passed through `redact`, which masks email
  addresses and `+`-prefixed phone numbers wherever they appear (an error text quoting an
  address, a URL-encoded `%2B…` in a client library's exception), and provider errors are
  scrubbed of their recipient in every spelling first (`scrub`: with or without `+`, the
  national number, separators). Names and message bodies cannot be recognised by a pattern:
  they are never put in a log line (a test scans a whole run's logs for a book's).
- While PostgreSQL or Redis is out (`OUTAGES`, told by the process's watch in
  `outreach/observe.py`), a warning repeated by a retry loop is written once; the line
  saying the dependency is back counts those left out.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

import orjson

from outreach.render.filters import mask_recipient

DEFAULT_PROCESS = "outreach"
# loggers that narrate routine work at INFO: held back unless the level is DEBUG
CHATTY_LOGGERS: Final = ("apscheduler", "alembic.runtime.migration")
# loggers never let through below WARNING: their INFO lines carry recipients (the twilio
# client logs every request with its query string) and add nothing of ours
NEVER_BELOW_WARNING: Final = ("twilio", "httpx", "httpcore")
# successful answers to these are not access-logged: probes and scrapes
QUIET_PATHS: Final = frozenset({"/health", "/ready", "/metrics"})
UNSUBSCRIBE_PREFIX: Final = "/v1/unsubscribe/"
# a borrower's id in a path (`/v1/borrowers/<id>/timeline`, `/ui/borrowers/<id>`) is the loan
# system's, which may have made it of a phone number, a national id or a name: left out
_BORROWER_ID: Final = re.compile(r"(/borrowers/)[^/]+")

_EMAIL: Final = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# a number written with its `+` (E.164 or with separators), or URL-encoded (`%2B…`)
_PLUS_PHONE: Final = re.compile(r"(?:\+|%2[Bb])\d[\d ().\-]{5,18}\d")
_NON_DIGIT: Final = re.compile(r"\D")
_SEPARATORS: Final = r"[\s().\-]*"
_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "fields"}


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: what the line is about, as data (`fields` in JSON)."""
    return {"fields": values}


def redact(text: str) -> str:
    """`text` with email addresses and `+`-prefixed phone numbers masked."""
    if "@" in text:
        text = _EMAIL.sub(lambda found: mask_recipient(found.group(0)), text)
    if "+" in text or "%2" in text:
        text = _PLUS_PHONE.sub(lambda found: mask_recipient(found.group(0)), text)
    return text


def scrub(text: str, recipient: str | None) -> str:
    """`text` without `recipient` in any spelling: the address, or the number with or
    without its `+` and country code, digits split by spaces, dots, dashes or brackets;
    then `redact`."""
    if recipient:
        shown = mask_recipient(recipient)
        if "@" in recipient:
            text = re.sub(re.escape(recipient), shown, text, flags=re.IGNORECASE)
        else:
            for digits in _spellings(recipient):
                pattern = r"(?<!\d)(?:\+|%2[Bb])?" + _SEPARATORS.join(digits) + r"(?!\d)"
                text = re.sub(pattern, shown, text)
    return redact(text)


def _spellings(number: str) -> list[str]:
    """The digit strings a number may be written as: whole, and its national number."""
    digits = _NON_DIGIT.sub("", number)
    found = [digits] if len(digits) >= 5 else []
    try:
        import phonenumbers

        parsed = phonenumbers.parse(number if number.startswith("+") else "+" + digits)
        national = str(parsed.national_number)
        if len(national) >= 5 and national != digits:
            found.append(national)
    except Exception:  # not a number phonenumbers reads: the digits alone
        pass
    return found


class Outages:
    """Which dependencies are out now, and the repeated warnings left out meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}
        self._seen: set[tuple[str, str]] = set()
        self._left_out = 0

    @property
    def down(self) -> list[str]:
        with self._lock:
            return sorted(self._down)

    def went_down(self, dependency: str, error: BaseException | str) -> None:
        """Record (and log, once) that `dependency` stopped answering."""
        with self._lock:
            if dependency in self._down:
                return
            self._down[dependency] = time.monotonic()
        reason = error if isinstance(error, str) else _error_line(error)
        logging.getLogger("outreach.outage").warning(
            "%s unreachable: %s; repeated warnings are written once until it answers again",
            dependency,
            reason,
            extra=fields(dependency=dependency, state="down", error=reason),
        )

    def came_back(self, dependency: str) -> None:
        """Record (and log, once) that `dependency` answers again."""
        with self._lock:
            since = self._down.pop(dependency, None)
            if since is None:
                return
            left_out = self._left_out
            if not self._down:
                self._seen.clear()
                self._left_out = 0
        seconds = round(time.monotonic() - since, 1)
        logging.getLogger("outreach.outage").info(
            "%s reachable again after %.1f s (%d repeated warnings left out meanwhile)",
            dependency,
            seconds,
            left_out,
            extra=fields(
                dependency=dependency, state="up", outage_seconds=seconds, left_out=left_out
            ),
        )

    def admit(self, record: logging.LogRecord) -> bool:
        """Whether a record is written: during an outage a warning whose text (before its
        arguments) was written already is left out and counted."""
        if record.levelno != logging.WARNING or record.name == "outreach.outage":
            return True
        with self._lock:
            if not self._down:
                return True
            key = (record.name, str(record.msg))
            if key in self._seen:
                self._left_out += 1
                return False
            self._seen.add(key)
            return True


OUTAGES = Outages()


def _error_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


class _OutageFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return OUTAGES.admit(record)


class AccessLogFilter(logging.Filter):
    """uvicorn's access lines: the path without its query string, an unsubscribe token
    replaced, none for a successful probe or scrape; their parts as `fields`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 5):
            return True
        client, method, path, version, status = args
        path = str(path).split("?", 1)[0]
        if path.startswith(UNSUBSCRIBE_PREFIX):
            path = UNSUBSCRIBE_PREFIX + "…"
        elif "/borrowers/" in path:
            path = _BORROWER_ID.sub(r"\1…", path)
        if path in QUIET_PATHS and isinstance(status, int) and 200 <= status < 300:
            return False
        record.args = (client, method, path, version, status)
        record.fields = {"method": method, "path": path, "status": status}
        return True


def _utc(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    found = getattr(record, "fields", None)
    return dict(found) if isinstance(found, Mapping) else {}


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(key): _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <process>[<pid>] <logger>: <message> key=value…`, redacted."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_utc(record.created)} {record.levelname} {self.process}[{record.process}] "
            f"{record.name}: {record.getMessage()}"
        )
        extra = _fields_of(record)
        if extra and record.name != "uvicorn.access":
            line += " " + " ".join(f"{key}={_plain(value)}" for key, value in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return redact(line)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else orjson.dumps(value).decode()
    if isinstance(value, int | float | bool) or value is None:
        return str(value)
    return orjson.dumps(value, default=str).decode()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, process, pid, logger, message, fields and,
    with an error, its exception; every text redacted."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "process": self.process,
            "pid": record.process,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "fields": _redacted(_fields_of(record)),
        }
        if record.exc_info:
            document["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exception"] = redact(record.exc_text)
        return orjson.dumps(document, default=str).decode()


def configure_logging(
    level: str = "INFO",
    log_format: str = "text",
    process: str = DEFAULT_PROCESS,
    stream: TextIO | None = None,
) -> logging.Handler:
    """The root logger writes `log_format` lines of `level` and above to `stream` (standard
    error), this process named `process`; the handler it installed."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(process) if log_format == "json" else TextFormatter(process))
    handler.addFilter(_OutageFilter())
    root = logging.getLogger()
    for previous in list(root.handlers):
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in CHATTY_LOGGERS:
        chatty = logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
        logging.getLogger(name).setLevel(chatty)
    for name in NEVER_BELOW_WARNING:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    install_access_log_filter()
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicContextFilter) for f in migration.filters):
        migration.addFilter(_AlembicContextFilter())
    server = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ServerLifecycleFilter) for f in server.filters):
        server.addFilter(_ServerLifecycleFilter())
    return handler


class _ServerLifecycleFilter(logging.Filter):
    """uvicorn narrates each step of starting and stopping at INFO; where it listens and
    that it is shutting down are kept, the four steps around each are not."""

    ROUTINE: Final = (
        "Started server process",
        "Waiting for application startup",
        "Application startup complete",
        "Waiting for application shutdown",
        "Application shutdown complete",
        "Finished server process",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(self.ROUTINE)


class _AlembicContextFilter(logging.Filter):
    """Alembic says which database it is on each time a context is made, which `/ready`
    does on every probe (`migrate.is_current`): those two lines are left out, the
    migrations it runs are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(
            ("Context impl", "Will assume")
        )


def install_access_log_filter() -> None:
    """`AccessLogFilter` on uvicorn's access log (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogFilter) for f in access.filters):
        access.addFilter(AccessLogFilter())
