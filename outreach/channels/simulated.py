"""The simulator's provider (SPEC §10): accepts everything on a virtual clock, reports later.

Every SMS and email is delivered `DELIVERY_DELAY` after it is sent, except Twilio's magic test
numbers, which behave as they do on Twilio's test credentials. Ids are derived from the message
ids, so the same inputs give the same ids and a simulation can be compared run to run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from outreach.channels.base import Outgoing, ProviderRejected, Receipt
from outreach.channels.twilio_errors import recipient_effect
from outreach.domain import Channel
from outreach.meters import metered

DELIVERY_DELAY = dt.timedelta(seconds=5)
# how many of the latest sends a sender keeps (`SimulatedSender.sent`)
RECENT_SENDS = 1000

# Refused at once, as Twilio refuses them at create: (code, detail).
MAGIC_REJECTIONS: dict[str, tuple[str, str]] = {
    "+15005550001": ("21211", "The 'To' number is not a valid phone number."),
    "+15005550004": ("21610", "Attempt to send to unsubscribed recipient"),
    "+15005550009": ("21614", "'To' number is not a valid mobile number"),
}
# Accepted, then reported undelivered with this error code.
MAGIC_UNDELIVERED: dict[str, str] = {"+15005550002": "30003"}


@dataclass(frozen=True)
class SimulatedSend:
    """One accepted message, for reports and tests."""

    provider_id: str
    outgoing: Outgoing
    sent_at: dt.datetime


class SimulatedSender:
    """A Sender for one channel whose outcomes the simulator pulls with `due_outcomes`."""

    # answers in memory without waiting for anything, so a batch may be marked `sending`
    # together before the first is handed over (see Dispatcher.dispatch_many)
    hands_over_at_once = True
    hand_over_run = 0  # the whole batch at once
    finds_sent = True

    def __init__(self, channel: Channel, clock: Callable[[], dt.datetime]) -> None:
        self.channel = channel
        self.provider = channel.value
        self._clock = clock
        self._lock = threading.Lock()
        self._order = itertools.count()  # ties in the heap resolve in sending order
        # (due at, order, provider id, status, error code)
        self._pending: list[tuple[dt.datetime, int, str, str, str | None]] = []
        self._receipts: dict[str, Receipt] = {}
        # the latest sends, for reports and tests (all of them would grow without bound)
        self.sent: deque[SimulatedSend] = deque(maxlen=RECENT_SENDS)

    @metered("simulated")
    def send(self, outgoing: Outgoing) -> Receipt:
        if self.channel is Channel.SMS and outgoing.to in MAGIC_REJECTIONS:
            code, detail = MAGIC_REJECTIONS[outgoing.to]
            raise ProviderRejected(code, detail, recipient_effect(code))
        now = self._clock()
        with self._lock:
            provider_id = self._new_id(outgoing.message_id)
            error_code = MAGIC_UNDELIVERED.get(outgoing.to) if self.channel is Channel.SMS else None
            status = "undelivered" if error_code else "delivered"
            heapq.heappush(
                self._pending,
                (now + DELIVERY_DELAY, next(self._order), provider_id, status, error_code),
            )
            receipt = Receipt(provider_id=provider_id, status="sent")
            self._receipts[outgoing.message_id] = receipt
            self.sent.append(SimulatedSend(provider_id, outgoing, now))
        return receipt

    def due_outcomes(self, now: dt.datetime) -> list[tuple[str, str, str | None]]:
        """Outcomes due by `now`, oldest first, each given once: (provider id, status, code)."""
        due: list[tuple[str, str, str | None]] = []
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                _, _, provider_id, status, error_code = heapq.heappop(self._pending)
                due.append((provider_id, status, error_code))
        return due

    def next_outcome_at(self) -> dt.datetime | None:
        """When the next outcome falls due, so a virtual clock can jump straight to it."""
        with self._lock:
            return self._pending[0][0] if self._pending else None

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        # Nothing is ever lost mid-call here: what was accepted was answered.
        with self._lock:
            return self._receipts.get(outgoing.message_id)

    def _new_id(self, message_id: str) -> str:
        # derived from the message (handed over once), so the same run gives the same ids
        # however its borrowers are split between processes
        digest = hashlib.blake2b(message_id.encode(), digest_size=16).hexdigest()
        if self.channel is Channel.SMS:
            return f"SM{digest}"  # shaped like a Twilio message sid
        return f"<sim-{digest[:20]}@outreach.simulated>"  # shaped like a Message-ID
