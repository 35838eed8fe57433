"""The Sender port every provider implements, and the errors it translates vendors into."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from outreach.domain import Channel
from outreach.errors import PermanentError, TransientError


class ErrorEffect(StrEnum):
    """What a provider's error code says, for the message and for the recipient; each
    vendor's table of its codes is in its channel module (twilio_errors.py, smtp_email.py)."""

    # final for this message; says nothing about the number (a carrier filtered the text)
    FINAL = "final"
    # final, and the number cannot receive texts: nothing more is sent to it
    INVALID_RECIPIENT = "invalid_recipient"
    # final, and the recipient opted out (replied STOP to this sender): an opt-out on record
    OPT_OUT = "opt_out"
    # Twilio is busy, not refusing: the message is tried again later
    RETRY = "retry"


@dataclass(frozen=True)
class Outgoing:
    """A rendered message ready for a provider."""

    message_id: str
    channel: Channel
    to: str
    body: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    segments: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)
    # the last instant the message may still reach the borrower (end of the allowed window)
    deliver_by: dt.datetime | None = None
    # asked immediately before the provider is called (`ensure_still_held`): False once the
    # worker's lease on the message lapsed, when the reconciler may be acting on it
    still_held: Callable[[], bool] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Receipt:
    """What a provider answered when it accepted a message."""

    provider_id: str
    # the status the provider reported at acceptance (`sent` when it gave no finer one)
    status: str = "sent"
    # the provider's error code, when a message it has a record of failed
    error_code: str | None = None


class ProviderRejected(PermanentError):
    """Raised when a provider refuses a message for good; `code` is its error code."""

    def __init__(self, code: str, detail: str, effect: ErrorEffect | None = None) -> None:
        super().__init__(f"provider rejected the message: {code} {detail}".strip())
        self.code = code
        self.detail = detail
        # what the rejection says about the recipient: opted out, invalid, or nothing (None)
        self.effect = effect


class ProviderUnavailable(TransientError):
    """Raised when a provider did not accept a message but may later (429, 5xx, refused)."""

    def __init__(self, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"provider unavailable: {code} {detail}".strip())
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class OutcomeUnknown(TransientError):
    """Raised when a request may or may not have reached the provider (timeout mid-call).

    Twilio's create call has no idempotency key, so such a message is reconciled, not resent.
    """


LEASE_LOST = "lease_lost"


def ensure_still_held(outgoing: Outgoing) -> None:
    """Raise ProviderUnavailable when the worker may no longer hand `outgoing` over."""
    if outgoing.still_held is not None and not outgoing.still_held():
        raise ProviderUnavailable(
            LEASE_LOST, "this worker's lease lapsed before the hand-over; not handed over"
        )


# longest run of messages marked `sending` together for a network provider, and about how long
# handing one over may take
MAX_HAND_OVER_RUN = 8
RUN_SECONDS = 0.05


def run_for_rate(rate_per_second: float | None) -> int:
    """The hand-over run of a provider paced at `rate_per_second` across all workers (None:
    not paced): what it takes in about RUN_SECONDS, from 1 to MAX_HAND_OVER_RUN."""
    if rate_per_second is None:
        return MAX_HAND_OVER_RUN
    return max(1, min(MAX_HAND_OVER_RUN, int(rate_per_second * RUN_SECONDS)))


class Sender(Protocol):
    """A provider for one channel, and what dispatch may rely on of it (its capabilities)."""

    channel: Channel
    # the name its status reports are recorded under (as its status callbacks are)
    provider: str
    # whether it answers in memory without waiting for anything: then a batch is marked
    # `sending` together before the first is handed over; otherwise in runs (below)
    hands_over_at_once: bool
    # for a provider that does not hand over at once: how many consecutive messages of a batch
    # have their cap slots reserved and are marked `sending` together (committed) before the
    # first of the run is handed over. 1: one at a time, each marked just before its own call.
    # Longer runs save the database and Redis round trips of each; the price is that a payment
    # or an opt-out arriving while a run is handed over no longer stops the rest of that run,
    # so a run stays short: what a provider takes in about RUN_SECONDS (see `run_for_rate`).
    hand_over_run: int
    # whether `find_sent` can tell if an interrupted attempt reached it (a relay cannot)
    finds_sent: bool

    def send(self, outgoing: Outgoing) -> Receipt: ...

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        """Look up whether an earlier, interrupted attempt reached the provider."""
        ...
