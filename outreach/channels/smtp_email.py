"""Email through an SMTP relay: multipart text + HTML, one connection per message.

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
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY

from outreach.channels.base import (
    ErrorEffect,
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
)
from outreach.domain import Channel
from outreach.errors import ConfigurationError
from outreach.settings import Settings

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

    # no status callback can arrive before its acceptance is recorded, so a batch's
    # acceptances may be recorded together (see Dispatcher.dispatch_many)
    reports_status_by_callback = False
    # a relay cannot be asked what it accepted: `find_sent` knows nothing (see there)
    finds_sent = False
    # waits on the network for the relay: one message at a time
    hands_over_at_once = False

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
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._settings = settings
        self._from_header = settings.email_from
        self._envelope_from = envelope_from
        self._domain = envelope_from.rpartition("@")[2]
        self._timeout = timeout
        # STARTTLS verifies the relay's certificate and host name, as a mail client should.
        self._tls_context = tls_context or ssl.create_default_context()
        self._clock = clock

    # -- the message -----------------------------------------------------------------------------

    def compose(self, outgoing: Outgoing) -> EmailMessage:
        """The MIME message for `outgoing`: text, plus an HTML alternative when there is one."""
        if outgoing.channel is not Channel.EMAIL or not outgoing.text:
            raise ValueError(f"message {outgoing.message_id} is not an email with a text part")
        message = EmailMessage()
        message["From"] = self._from_header
        message["To"] = outgoing.to
        message["Subject"] = outgoing.subject or ""
        message["Date"] = email.utils.format_datetime(self._clock())
        message["Message-ID"] = email.utils.make_msgid(domain=self._domain)
        # ours, so a bounce or a reply can be traced to the message log without a lookup
        message["X-Outreach-Message-Id"] = outgoing.message_id
        for name, value in outgoing.headers.items():
            message[name] = value
        message.set_content(outgoing.text)
        if outgoing.html:
            message.add_alternative(outgoing.html, subtype="html")
        return message

    # -- sending ---------------------------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> Receipt:
        try:
            message = self.compose(outgoing)
        except ValueError as error:
            # e.g. a line break in a header value: a rendering bug, never fixed by retrying
            raise ProviderRejected("invalid_message", str(error)) from error
        international = not (self._envelope_from + outgoing.to).isascii()
        policy = SMTPUTF8_POLICY if international else SMTP_POLICY
        payload = message.as_bytes(policy=policy)
        self._transmit(outgoing.to, payload, international)
        return Receipt(provider_id=str(message["Message-ID"]), status="sent")

    def _transmit(self, recipient: str, payload: bytes, international: bool) -> None:
        settings = self._settings
        delivered_data = False  # the final "." went out: from here a lost reply is unknown
        # Not `with SMTP(...)`: its exit sends QUIT even after a timeout, waiting a second
        # timeout for nothing; a failed conversation is simply closed.
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
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()  # it is accepted; a rude goodbye changes nothing
        except (ProviderRejected, ProviderUnavailable):
            raise
        except smtplib.SMTPConnectError as error:
            # a refusing greeting (421, 554) is about the relay, never about this message
            raise ProviderUnavailable(str(error.smtp_code), _text(error.smtp_error)) from error
        except smtplib.SMTPAuthenticationError as error:
            # our credentials, not the message: wait for the operator rather than fail it
            raise ProviderUnavailable(str(error.smtp_code), "SMTP login refused") from error
        except smtplib.SMTPNotSupportedError as error:
            raise ProviderUnavailable("smtp_unsupported", str(error)) from error
        except smtplib.SMTPResponseException as error:
            if delivered_data:
                raise OutcomeUnknown(_lost_reply(error)) from error
            raise _reply_error(error.smtp_code, error.smtp_error, at_recipient=False) from error
        except (smtplib.SMTPException, OSError) as error:
            # timeouts, refused or dropped connections, TLS failures
            if delivered_data:
                raise OutcomeUnknown(_lost_reply(error)) from error
            raise ProviderUnavailable("smtp_connection", _describe(error)) from error
        finally:
            if connection is not None:
                connection.close()

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        """Always None: SMTP has no way to ask a relay what it accepted.

        The only evidence of acceptance is the 250 reply to the end of data; when that reply
        was lost (OutcomeUnknown) nothing can recover it, and the message is not sent again:
        a possibly missing reminder is better than a duplicate one to a borrower.
        """
        return None


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
