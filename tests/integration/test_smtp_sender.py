"""SmtpSender against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope

from outreach.channels.base import (
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
)
from outreach.channels.smtp_email import SmtpSender
from outreach.domain import Channel
from outreach.errors import ConfigurationError
from outreach.settings import Settings, load_settings
from tests.conftest import service_missing
from tests.support import free_port

BORROWER = "borrower@example.org"
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://outreach.example/v1/unsubscribe/tok3n>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


_senders: list[SmtpSender] = []


class KeptSmtpSender(SmtpSender):
    """An SmtpSender closed after the test, as a worker's are when it stops: it keeps its
    connections open between messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _senders.append(self)


def close_senders() -> None:
    """Say goodbye on the test's kept connections (before its relay stops, so that no
    connection is left for the relay to drop)."""
    while _senders:
        _senders.pop().close()


@pytest.fixture(autouse=True)
def senders_closed() -> Iterator[None]:
    yield
    close_senders()


def email_message(to: str = BORROWER, **overrides: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "message_id": "msg-42",
        "channel": Channel.EMAIL,
        "to": to,
        "subject": "還款提醒 / Payment reminder",
        "text": "Your instalment of 1,200.00 is due.\n.A line that starts with a dot.\n",
        "html": "<p>Your instalment of <b>1,200.00</b> is due.</p>",
        "headers": UNSUBSCRIBE,
    }
    fields.update(overrides)
    return Outgoing(**fields)


@dataclass
class ScriptedRelay:
    """An aiosmtpd handler that records what it accepts and answers as scripted per address."""

    accepted: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    data_delay: float = 0.0

    async def handle_RCPT(
        self,
        server: Any,
        session: Any,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        for address in envelope.rcpt_tos:
            if address in self.data_replies:
                return self.data_replies[address]
        self.accepted.append(envelope)
        return "250 2.0.0 Queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd then answers a failure with 535 itself
        return AuthResult(success=(login, password) == ("collections", "s3cret"), handled=False)


@dataclass
class Relay:
    handler: ScriptedRelay
    port: int


@pytest.fixture
def relay() -> Iterator[Relay]:
    handler = ScriptedRelay()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=handler.authenticate,
        auth_require_tls=False,
        enable_SMTPUTF8=True,
    )
    controller.start()
    try:
        yield Relay(handler, port)
    finally:
        close_senders()
        controller.stop()


def smtp_settings(port: int, **env: str) -> Settings:
    values = {
        "OUTREACH_EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "EMAIL_FROM": "Acme Lending <collections@acme.example>",
    }
    values.update(env)
    return load_settings(values)


def parsed(envelope: Envelope) -> EmailMessage:
    content = envelope.original_content or envelope.content
    assert isinstance(content, bytes)
    message = email.message_from_bytes(content, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def test_multipart_message_with_one_click_unsubscribe(relay: Relay) -> None:
    sender = KeptSmtpSender(smtp_settings(relay.port), timeout=5)

    receipt = sender.send(email_message())

    (envelope,) = relay.handler.accepted
    assert envelope.mail_from == "collections@acme.example"
    assert envelope.rcpt_tos == [BORROWER]
    message = parsed(envelope)
    assert message["Message-ID"] == receipt.provider_id
    assert receipt.provider_id.endswith("@acme.example>")
    assert receipt.status == "sent"
    assert message["From"] == "Acme Lending <collections@acme.example>"
    assert message["To"] == BORROWER
    assert message["Subject"] == "還款提醒 / Payment reminder"
    assert message["List-Unsubscribe"] == "<https://outreach.example/v1/unsubscribe/tok3n>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Outreach-Message-Id"] == "msg-42"
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert ".A line that starts with a dot." in text.get_content()  # dot-stuffing undone
    assert html.get_content_type() == "text/html"
    assert "<b>1,200.00</b>" in html.get_content()
    assert relay.handler.logins == []  # no SMTP_USERNAME: no login


def test_text_only_message_when_there_is_no_html(relay: Relay) -> None:
    KeptSmtpSender(smtp_settings(relay.port)).send(email_message(html=None))

    message = parsed(relay.handler.accepted[0])
    assert message.get_content_type() == "text/plain"


def test_chinese_names_subjects_and_bodies_arrive_as_written(relay: Relay) -> None:
    settings = smtp_settings(relay.port, EMAIL_FROM="海港信贷 <kefu@harborlending.example>")
    subject = "海港信贷：关于您账户的还款安排与协商方案（分期、延期、降低每期还款额）"
    text = "尊敬的王芳：\n您的账户已逾期 16 天，应还金额 ¥2,450.00。\n.以点开头的一行\n"
    html = "<p>尊敬的王芳：应还金额 <b>¥2,450.00</b></p>"
    KeptSmtpSender(settings).send(email_message(subject=subject, text=text, html=html))

    content = relay.handler.accepted[0].original_content or b""
    assert content.isascii()  # encoded words and base64: any relay carries it
    assert all(len(line) <= 998 for line in content.split(b"\r\n"))
    message = parsed(relay.handler.accepted[0])
    assert message["From"] == "海港信贷 <kefu@harborlending.example>"
    assert message["Subject"] == subject
    plain, rich = message.iter_parts()
    assert plain.get_content() == text
    assert "<b>¥2,450.00</b>" in rich.get_content()
    assert message["List-Unsubscribe"] == "<https://outreach.example/v1/unsubscribe/tok3n>"


def test_no_login_in_clear_unless_allowed(relay: Relay) -> None:
    settings = smtp_settings(relay.port, SMTP_USERNAME="collections", SMTP_PASSWORD="s3cret")
    with pytest.raises(ConfigurationError) as raised:
        KeptSmtpSender(settings).send(email_message())
    message = str(raised.value)
    assert message.startswith("SMTP_USERNAME:") and "SMTP_STARTTLS" in message
    assert "s3cret" not in message
    assert relay.handler.logins == [] and relay.handler.accepted == []


def test_login_when_a_username_is_set(relay: Relay) -> None:
    settings = smtp_settings(
        relay.port,
        SMTP_USERNAME="collections",
        SMTP_PASSWORD="s3cret",
        SMTP_ALLOW_PLAINTEXT_AUTH="true",  # the test relay has no TLS
    )

    KeptSmtpSender(settings).send(email_message())

    assert relay.handler.logins == [("collections", "s3cret")]
    assert len(relay.handler.accepted) == 1


def test_refused_login_waits_for_the_operator(relay: Relay) -> None:
    settings = smtp_settings(
        relay.port,
        SMTP_USERNAME="collections",
        SMTP_PASSWORD="wrong",
        SMTP_ALLOW_PLAINTEXT_AUTH="true",
    )

    with pytest.raises(ProviderUnavailable) as raised:
        KeptSmtpSender(settings).send(email_message())

    assert raised.value.code == "535"
    assert relay.handler.accepted == []


@pytest.mark.parametrize(
    ("reply", "effect"),
    [
        ("550 5.1.1 No such user here", "invalid_recipient"),
        ("551 User not local", "invalid_recipient"),
        ("553 5.1.3 Mailbox name not allowed", "invalid_recipient"),
        ("550 5.7.1 Relaying denied", None),  # about us, not the address
        ("554 5.7.1 Rejected by policy", None),
    ],
)
def test_permanent_recipient_refusals(relay: Relay, reply: str, effect: str | None) -> None:
    relay.handler.rcpt_replies[BORROWER] = reply

    with pytest.raises(ProviderRejected) as raised:
        KeptSmtpSender(smtp_settings(relay.port)).send(email_message())

    assert raised.value.code == reply[:3]
    assert raised.value.effect == effect
    assert raised.value.detail == reply[4:]


def test_temporary_recipient_refusal_is_unavailable(relay: Relay) -> None:
    relay.handler.rcpt_replies[BORROWER] = "452 4.2.2 Mailbox full, try later"

    with pytest.raises(ProviderUnavailable) as raised:
        KeptSmtpSender(smtp_settings(relay.port)).send(email_message())

    assert raised.value.code == "452"


@pytest.mark.parametrize(
    ("reply", "error"),
    [("554 5.6.0 Message rejected", ProviderRejected), ("451 Try again", ProviderUnavailable)],
)
def test_refusal_at_end_of_data(relay: Relay, reply: str, error: type[Exception]) -> None:
    relay.handler.data_replies[BORROWER] = reply

    with pytest.raises(error) as raised:
        KeptSmtpSender(smtp_settings(relay.port)).send(email_message())

    assert getattr(raised.value, "code", None) == reply[:3]
    if isinstance(raised.value, ProviderRejected):
        assert raised.value.effect is None


def test_no_reply_after_the_data_is_an_unknown_outcome(relay: Relay) -> None:
    relay.handler.data_delay = 1.5
    sender = KeptSmtpSender(smtp_settings(relay.port), timeout=0.3)
    outgoing = email_message()

    with pytest.raises(OutcomeUnknown, match="not sent again"):
        sender.send(outgoing)

    # and SMTP cannot be asked afterwards, so the reconciler gets no receipt
    assert sender.find_sent(outgoing, since=dt.datetime.now(dt.UTC)) is None


def test_a_relay_that_never_greets_is_unavailable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]

        with pytest.raises(ProviderUnavailable) as raised:
            KeptSmtpSender(smtp_settings(port), timeout=0.3).send(email_message())

    assert raised.value.code == "smtp_connection"


def test_refused_connection_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable) as raised:
        KeptSmtpSender(smtp_settings(free_port()), timeout=2).send(email_message())

    assert raised.value.code == "smtp_connection"


def test_internationalized_address_uses_smtputf8(relay: Relay) -> None:
    KeptSmtpSender(smtp_settings(relay.port)).send(email_message(to="借款人@例子.example"))

    (envelope,) = relay.handler.accepted
    assert envelope.rcpt_tos == ["借款人@例子.example"]
    assert "SMTPUTF8" in [option.upper() for option in envelope.mail_options]


def test_a_line_break_in_a_header_is_rejected_before_connecting() -> None:
    sender = KeptSmtpSender(smtp_settings(free_port()))

    with pytest.raises(ProviderRejected) as raised:
        sender.send(email_message(subject="Reminder\r\nBcc: everyone@example.org"))

    assert raised.value.code == "invalid_message"


def test_configuration_is_checked_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="EMAIL_FROM"):
        KeptSmtpSender(load_settings({"SMTP_HOST": "127.0.0.1"}))
    with pytest.raises(ConfigurationError, match="SMTP_PASSWORD"):
        KeptSmtpSender(smtp_settings(25, SMTP_USERNAME="collections"))


# -- STARTTLS, with a certificate made for this test ---------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        # CI machines have openssl; there a missing one is a failure, never a silent skip
        service_missing("openssl", "not installed: no certificate for the STARTTLS test")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_starttls_then_login(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    handler = ScriptedRelay()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context,
        require_starttls=True,  # the relay refuses anything before STARTTLS
        authenticator=handler.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        settings = smtp_settings(
            port, SMTP_STARTTLS="true", SMTP_USERNAME="collections", SMTP_PASSWORD="s3cret"
        )
        trusting = ssl.create_default_context(cafile=str(cert))
        KeptSmtpSender(settings, timeout=5, tls_context=trusting).send(email_message())
        # without trusting the certificate the relay is not used at all
        with pytest.raises(ProviderUnavailable):
            KeptSmtpSender(settings, timeout=5).send(email_message())
    finally:
        close_senders()
        controller.stop()

    assert handler.logins == [("collections", "s3cret")]
    assert len(handler.accepted) == 1


@dataclass
class CountingRelay(ScriptedRelay):
    """Also counts the connections it greeted, and can drop one on its next MAIL."""

    connections: int = 0
    drop_mails: int = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.drop_mails:
            self.drop_mails -= 1
            server.transport.close()  # as a relay's idle timeout or restart would
            return "421 closing"
        envelope.mail_from = address
        return "250 OK"


@pytest.fixture
def counting_relay() -> Iterator[Relay]:
    handler = CountingRelay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Relay(handler, port)
    finally:
        close_senders()
        controller.stop()


def test_one_connection_carries_a_thread_s_messages(counting_relay: Relay) -> None:
    sender = KeptSmtpSender(smtp_settings(counting_relay.port), timeout=5)
    for index in range(5):
        sender.send(email_message(to=f"b{index}@example.org", message_id=f"msg-{index}"))
    sender.close()
    handler = counting_relay.handler
    assert [e.rcpt_tos for e in handler.accepted] == [[f"b{i}@example.org"] for i in range(5)]
    assert handler.connections == 1


def test_a_dropped_kept_connection_sends_the_message_once_on_a_new_one(
    counting_relay: Relay,
) -> None:
    sender = KeptSmtpSender(smtp_settings(counting_relay.port), timeout=5)
    sender.send(email_message(to="first@example.org"))
    counting_relay.handler.drop_mails = 1
    sender.send(email_message(to="second@example.org", message_id="msg-43"))
    sender.close()
    handler = counting_relay.handler
    assert [e.rcpt_tos for e in handler.accepted] == [["first@example.org"], ["second@example.org"]]
    assert handler.connections == 2


def test_a_connection_that_drops_twice_defers_the_message(counting_relay: Relay) -> None:
    sender = KeptSmtpSender(smtp_settings(counting_relay.port), timeout=5)
    sender.send(email_message(to="first@example.org"))
    handler = counting_relay.handler
    handler.drop_mails = 2  # the kept connection's, then the new one's
    with pytest.raises(ProviderUnavailable):
        sender.send(email_message(to="second@example.org", message_id="msg-43"))
    assert [e.rcpt_tos for e in handler.accepted] == [["first@example.org"]]
    assert handler.connections == 2
