"""A loopback SMTP relay for tests: accepts every address but one, which it refuses with the
address in its reply, as real relays write it (`550 5.1.1 <a@b>: Recipient address rejected`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port


class Relay:
    def __init__(self, refused: str) -> None:
        self.refused_address = refused
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.port = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == self.refused_address:
            self.refused.append(address)
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 OK"


@contextmanager
def running_relay(refused: str) -> Iterator[Relay]:
    """A relay on a free loopback port (`relay.port`), stopped afterwards."""
    relay = Relay(refused)
    relay.port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=relay.port)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()
