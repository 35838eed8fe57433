"""What one dispatch did to one message: a kind, and for most kinds what decided it.

An `Outcome` is also the text the logs and the simulator's counts have always shown
(`sent`, `skipped:leased`, `deferred:quiet_hours`, `withheld:opted_out`, `failed:21610`…):
it is a `str` of that text, so it logs and compares as before, and is read by its `kind`
and `detail`.
"""

from __future__ import annotations

from enum import StrEnum

from outreach.domain import Reason


class OutcomeKind(StrEnum):
    # handed to the provider, which accepted it
    SENT = "sent"
    # the provider was busy: tried again later
    RETRY = "retry"
    # the provider may or may not have it: left `sending` for the reconciler
    UNKNOWN = "unknown"
    # released before its time: the clock brings it back
    NOT_DUE = "not_due"
    # no such message
    MISSING = "missing"
    # another attempt has it, or it is past where this attempt could take it (detail: why)
    SKIPPED = "skipped"
    # waits (detail: the reason)
    DEFERRED = "deferred"
    # withheld by a rule (detail: the reason)
    WITHHELD = "withheld"
    # failed for good (detail: the provider's code, or why)
    FAILED = "failed"


class Outcome(str):
    """`kind`, or `kind:detail`."""

    kind: OutcomeKind
    detail: str | None

    def __new__(cls, kind: OutcomeKind, detail: str | None = None) -> Outcome:
        outcome = super().__new__(cls, kind.value if detail is None else f"{kind.value}:{detail}")
        outcome.kind = kind
        outcome.detail = detail
        return outcome

    @classmethod
    def skipped(cls, why: str | None = None) -> Outcome:
        """Left alone: `why` is the status it was found in, `leased`, `claimed`, `missing`."""
        return cls(OutcomeKind.SKIPPED, why)

    @classmethod
    def deferred(cls, reason: Reason | str) -> Outcome:
        return cls(OutcomeKind.DEFERRED, str(reason))

    @classmethod
    def withheld(cls, reason: Reason) -> Outcome:
        return cls(OutcomeKind.WITHHELD, reason.value)

    @classmethod
    def failed(cls, why: Reason | str) -> Outcome:
        return cls(OutcomeKind.FAILED, str(why))

    @property
    def unsettled(self) -> bool:
        """Whether what it did may change what planning decides next (a rejection may opt
        the borrower out; a deferral moves the message to another instant)."""
        return self.kind in (OutcomeKind.FAILED, OutcomeKind.DEFERRED, OutcomeKind.RETRY)


SENT = Outcome(OutcomeKind.SENT)
RETRY = Outcome(OutcomeKind.RETRY)
UNKNOWN = Outcome(OutcomeKind.UNKNOWN)
NOT_DUE = Outcome(OutcomeKind.NOT_DUE)
MISSING = Outcome(OutcomeKind.MISSING)
