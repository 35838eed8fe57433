"""Development senders: print the message and record it; nothing leaves the machine."""

from __future__ import annotations

import datetime as dt
import sys
import threading
from typing import TextIO

from outreach.channels.base import Outgoing, Receipt
from outreach.domain import Channel
from outreach.meters import metered


class ConsoleSender:
    # answers in memory without waiting for anything, so a batch may be marked `sending`
    # together before the first is handed over (see Dispatcher.dispatch_many)
    hands_over_at_once = True
    hand_over_run = 0  # the whole batch at once
    finds_sent = True

    def __init__(self, channel: Channel, stream: TextIO | None = None) -> None:
        self.channel = channel
        self.provider = channel.value
        self._stream = stream
        self._lock = threading.Lock()
        self._sent: dict[str, Receipt] = {}

    @metered("console")
    def send(self, outgoing: Outgoing) -> Receipt:
        stream = self._stream or sys.stdout
        if outgoing.channel is Channel.SMS:
            text = f"[sms to {outgoing.to}] {outgoing.body}"
        else:
            text = f"[email to {outgoing.to}] Subject: {outgoing.subject}\n{outgoing.text}"
        receipt = Receipt(provider_id=f"console-{outgoing.message_id}", status="sent")
        with self._lock:
            print(text, file=stream, flush=True)
            self._sent[outgoing.message_id] = receipt
        return receipt

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        # The console cannot lose an answer mid-call: what it printed, it returned.
        with self._lock:
            return self._sent.get(outgoing.message_id)
