"""Email through an SMTP relay: multipart text + HTML, over one connection per worker thread,
kept open between messages.

A kept connection the relay has dropped meanwhile (its idle timeout, a restart) shows when the
next message's MAIL or RCPT fails: nothing of that message has gone out, so it is sent once
more on a new connection. A connection idle longer than IDLE_SECONDS is not trusted at all and
replaced before use; one that saw any error is closed.

The conversation is driven step by step (MAIL, RCPT, DATA, end of data) rather than with
`send_message`, because what a failure means depends on where it happened: before the final
"." the server cannot have the message and it may be sent again; once the final "." has gone
out, a lost reply means the server may have accepted it, and sending again could deliver it
twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY
from email.policy import compat32

from outreach.channels.base import (
    MAX_HAND_OVER_RUN,
    ErrorEffect,
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
)
from outreach.domain import Channel
from outreach.errors import ConfigurationError
from outreach.meters import provider_request
from outreach.settings import Settings

# a kept connection idle this long may have been dropped by the relay (RFC 5321 §4.5.3.2 lets
# a server time out after 5 minutes): replaced, rather than tried
IDLE_SECONDS = 60.0

# RCPT replies that say the address itself cannot receive mail (RFC 5321 §4.2.2): no such
# mailbox, user not local, mailbox name not allowed.
RECIPIENT_CODES = frozenset({550, 551, 553})
# Enhanced status codes (RFC 3463) that are about the address: 5.1.x addressing, 5.2.1
# mailbox disabled. Others with a 550, like 5.7.1 "relaying denied", are about us.
_ADDRESS_STATUS = re.compile(r"^5\.(1\.\d+|2\.1)\b")
_ENHANCED_STATUS = re.compile(r"^\d\.\d{1,3}\.\d{1,3}\b")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SmtpSender:
    """The Sender for Channel.EMAIL through the relay in SMTP_HOST / SMTP_PORT."""

    # a relay cannot be asked what it accepted: `find_sent` knows nothing (see there)
    finds_sent = False
    # waits on the network for the relay: in short runs
    hands_over_at_once = False
    hand_over_run = MAX_HAND_OVER_RUN

    channel = Channel.EMAIL
    provider = Channel.EMAIL.value

    def __init__(
        self,
        settings: Settings,
        timeout: float = 30,
        *,
        tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if not settings.email_from:
            raise ConfigurationError("EMAIL_FROM: required for the smtp email provider")
        _, envelope_from = email.utils.parseaddr(settings.email_from)
        if "@" not in envelope_from:
            raise ConfigurationError(
                f"EMAIL_FROM: '{settings.email_from}' has no address (name@domain)"
            )
        if settings.smtp_username and not settings.smtp_password:
            raise ConfigurationError("SMTP_PASSWORD: required when SMTP_USERNAME is set")
        if settings.smtp_username and not (
            settings.smtp_starttls or settings.smtp_allow_plaintext_auth
        ):
            raise ConfigurationError(
                "SMTP_USERNAME: logging in without SMTP_STARTTLS sends SMTP_PASSWORD in clear; "
                "set SMTP_STARTTLS=true, or SMTP_ALLOW_PLAINTEXT_AUTH=true for a relay on this "
                "machine or a private network"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._settings = settings
        self._from_header = settings.email_from
        sender_name, _ = email.utils.parseaddr(settings.email_from)
        self._from_header_encoded = email.utils.formataddr(
            (sender_name, envelope_from), charset="utf-8"
        )
        self._envelope_from = envelope_from
        self._domain = envelope_from.rpartition("@")[2]
        self._timeout = timeout
        # STARTTLS verifies the relay's certificate and host name, as a mail client should.
        self._tls_context = tls_context or ssl.create_default_context()
        self._clock = clock
        self._kept = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._open_lock = threading.Lock()

    def close(self) -> None:
        """Say goodbye on every kept connection."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
            connection.close()

    # -- the message -----------------------------------------------------------------------------

    def compose(self, outgoing: Outgoing, *, international: bool = False) -> tuple[bytes, str]:
        """The MIME message for `outgoing` (text, plus an HTML alternative when there is one)
        as the bytes to send, and its Message-ID; ValueError for a header that would break
        the message (a line break in it: a rendering bug, or an injection)."""
        if outgoing.channel is not Channel.EMAIL or not outgoing.text:
            raise ValueError(f"message {outgoing.message_id} is not an email with a text part")
        # ours, so a bounce or a reply can be traced to the message log without a lookup
        headers = {
            "To": outgoing.to,
            "Subject": outgoing.subject or "",
            "X-Outreach-Message-Id": outgoing.message_id,
            **outgoing.headers,
        }
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"the {name} header has a line break")
        message_id = email.utils.make_msgid(domain=self._domain)
        date = email.utils.format_datetime(self._clock())
        if international:
            composed = _composed_for_smtputf8(
                outgoing, self._from_header, headers, date, message_id
            )
            return composed, message_id
        # the email.mime classes under the compat32 policy build the same message in a third
        # of the CPU of EmailMessage and its header registry (BENCHMARKS.md, real providers)
        text = _text_part(outgoing.text, "plain")
        message: Message = text
        if outgoing.html:
            message = MIMEMultipart("alternative")
            message.attach(text)
            message.attach(_text_part(outgoing.html, "html"))
        message["From"] = self._from_header_encoded
        message["Date"] = date
        message["Message-ID"] = message_id
        for name, value in headers.items():
            message[name] = (
                value
                if value.isascii()
                else Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
            )
        return message.as_bytes(policy=_WIRE_POLICY), message_id

    # -- sending ---------------------------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> Receipt:
        international = not (self._envelope_from + outgoing.to).isascii()
        try:
            payload, message_id = self.compose(outgoing, international=international)
        except ValueError as error:
            # e.g. a line break in a header value: a rendering bug, never fixed by retrying
            raise ProviderRejected("invalid_message", str(error)) from error
        with provider_request("smtp", outgoing):
            self._transmit(outgoing.to, payload, international)
        return Receipt(provider_id=message_id, status="sent")

    def _transmit(self, recipient: str, payload: bytes, international: bool) -> None:
        connection, kept = self._connection()
        try:
            self._conversation(connection, recipient, payload, international)
        except _DroppedBeforeData as dropped:
            self._discard(connection)
            if not kept:
                raise ProviderUnavailable("smtp_connection", _describe(dropped.error)) from None
            # the relay had closed the kept connection; nothing of this message went out
            connection, _ = self._connection()
            try:
                self._conversation(connection, recipient, payload, international)
            except _DroppedBeforeData as again:
                self._discard(connection)
                raise ProviderUnavailable("smtp_connection", _describe(again.error)) from None
            except (ProviderRejected, ProviderUnavailable):
                self._reset_or_discard(connection)
                raise
            except BaseException:
                self._discard(connection)
                raise
        except (ProviderRejected, ProviderUnavailable):
            # the relay answered, and refused this message: the connection goes on
            self._reset_or_discard(connection)
            raise
        except BaseException:
            self._discard(connection)
            raise
        self._kept.last_used = time.monotonic()

    def _reset_or_discard(self, connection: smtplib.SMTP) -> None:
        """After a refused message: RSET, so the next one starts a clean transaction on the
        same connection; closed when even that fails."""
        try:
            code, _ = connection.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self._discard(connection)
            return
        self._kept.last_used = time.monotonic()

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's connection, and whether it was kept from an earlier message; a new
        one (greeted, TLS, logged in) when there is none or it sat idle too long."""
        connection: smtplib.SMTP | None = getattr(self._kept, "connection", None)
        if connection is not None:
            if time.monotonic() - self._kept.last_used < IDLE_SECONDS:
                return connection, True
            self._discard(connection)
        connection = self._connect()
        self._kept.connection = connection
        self._kept.last_used = time.monotonic()
        with self._open_lock:
            self._open.add(connection)
        return connection, False

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        connection: smtplib.SMTP | None = None
        try:
            # connecting in the constructor also tells starttls() the host name to verify
            connection = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=self._timeout)
            connection.ehlo()
            if settings.smtp_starttls:
                connection.starttls(context=self._tls_context)
                connection.ehlo()
            if settings.smtp_username and settings.smtp_password:
                connection.login(settings.smtp_username, settings.smtp_password.reveal())
            return connection
        except Exception as error:
            if connection is not None:
                connection.close()
            raise _connection_error(error) from error

    def _discard(self, connection: smtplib.SMTP) -> None:
        """Close a connection that saw an error (or idled too long); the next message opens
        another. Not `quit()`: after a timeout it would wait a second timeout for nothing."""
        if getattr(self._kept, "connection", None) is connection:
            self._kept.connection = None
        with self._open_lock:
            self._open.discard(connection)
        connection.close()

    def _conversation(
        self, connection: smtplib.SMTP, recipient: str, payload: bytes, international: bool
    ) -> None:
        """One message on an open connection. A failure of the connection before the final
        "." is `_DroppedBeforeData` (the message may go again); after it, `OutcomeUnknown`."""
        delivered_data = False  # the final "." went out: from here a lost reply is unknown
        try:
            options: list[str] = []
            if international:
                if not connection.has_extn("smtputf8"):
                    raise ProviderRejected(
                        "smtputf8_unsupported",
                        "the relay cannot carry an internationalized address",
                    )
                options = ["SMTPUTF8", "BODY=8BITMIME"]
            code, reply = connection.mail(self._envelope_from, options)
            if code != 250:
                raise _reply_error(code, reply, at_recipient=False)
            code, reply = connection.rcpt(recipient)
            if code not in (250, 251):
                raise _reply_error(code, reply, at_recipient=True)
            code, reply = connection.docmd("DATA")
            if code != 354:
                raise _reply_error(code, reply, at_recipient=False)
            connection.send(_dot_stuffed(payload))
            delivered_data = True
            code, reply = connection.getreply()
            if code != 250:
                raise _reply_error(code, reply, at_recipient=False)
        except (ProviderRejected, ProviderUnavailable):
            raise
        except smtplib.SMTPResponseException as error:
            if delivered_data:
                raise OutcomeUnknown(_lost_reply(error)) from error
            raise _reply_error(error.smtp_code, error.smtp_error, at_recipient=False) from error
        except (smtplib.SMTPException, OSError) as error:
            # timeouts, refused or dropped connections
            if delivered_data:
                raise OutcomeUnknown(_lost_reply(error)) from error
            raise _DroppedBeforeData(error) from error

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        """Always None: SMTP has no way to ask a relay what it accepted.

        The only evidence of acceptance is the 250 reply to the end of data; when that reply
        was lost (OutcomeUnknown) nothing can recover it, and the message is not sent again:
        a possibly missing reminder is better than a duplicate one to a borrower.
        """
        return None


class _DroppedBeforeData(Exception):
    """The connection failed before the final "." of a message: the relay cannot have it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _connection_error(error: Exception) -> Exception:
    """What a failure to open a connection means for the message: always "try later"."""
    if isinstance(error, smtplib.SMTPConnectError):
        # a refusing greeting (421, 554) is about the relay, never about this message
        return ProviderUnavailable(str(error.smtp_code), _text(error.smtp_error))
    if isinstance(error, smtplib.SMTPAuthenticationError):
        # our credentials, not the message: wait for the operator rather than fail it
        return ProviderUnavailable(str(error.smtp_code), "SMTP login refused")
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return ProviderUnavailable("smtp_unsupported", str(error))
    if isinstance(error, smtplib.SMTPResponseException):
        return _reply_error(error.smtp_code, error.smtp_error, at_recipient=False)
    if isinstance(error, smtplib.SMTPException | OSError):
        # timeouts, refused connections, TLS failures
        return ProviderUnavailable("smtp_connection", _describe(error))
    return error


# headers as written: an ASCII value stays on its line (a folded List-Unsubscribe reads back
# with a leading space), the others are already encoded words folded by `Header`
_WIRE_POLICY = compat32.clone(linesep="\r\n", max_line_length=None)


def _text_part(content: str, subtype: str) -> MIMEText:
    """A text part: 7bit when it is ASCII, else UTF-8 in base64 (safe over any relay)."""
    if content.isascii():
        return MIMEText(content, subtype, "us-ascii")
    return MIMEText(content, subtype, "utf-8")  # the utf-8 charset's bodies are base64


def _composed_for_smtputf8(
    outgoing: Outgoing, sender: str, headers: dict[str, str], date: str, message_id: str
) -> bytes:
    """An internationalized address travels in UTF-8 headers (RFC 6532), which only the
    modern email API writes."""
    message = EmailMessage()
    message["From"] = sender
    message["Date"] = date
    message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name] = value
    message.set_content(outgoing.text or "")
    if outgoing.html:
        message.add_alternative(outgoing.html, subtype="html")
    return message.as_bytes(policy=SMTPUTF8_POLICY)


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA body: leading dots doubled, CRLF-terminated, then the lone "." (RFC 5321)."""
    body = _LEADING_DOT.sub(b"..", payload)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return text.strip()


def _reply_error(
    code: int, reply: bytes | str, *, at_recipient: bool
) -> ProviderRejected | ProviderUnavailable:
    detail = _text(reply)
    if 500 <= code < 600:
        return ProviderRejected(str(code), detail, _recipient_effect(code, detail, at_recipient))
    # 4xx (and anything unexpected, such as a 421 on closing): try again later
    return ProviderUnavailable(str(code), detail)


def _recipient_effect(code: int, detail: str, at_recipient: bool) -> ErrorEffect | None:
    if not at_recipient or code not in RECIPIENT_CODES:
        return None
    if _ENHANCED_STATUS.match(detail) and not _ADDRESS_STATUS.match(detail):
        return None
    return ErrorEffect.INVALID_RECIPIENT


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _lost_reply(error: BaseException) -> str:
    return (
        f"no reply to the end of data ({_describe(error)}); the relay may have accepted the "
        "message, so it is not sent again"
    )
