"""What Twilio's error codes mean: the one table sending, status callbacks, reconciliation,
the simulated provider and the simulation's checks read.

Sources: Twilio's error dictionary (https://www.twilio.com/docs/api/errors/<code>).
"""

from __future__ import annotations

from collections.abc import Mapping

from outreach.channels.base import ErrorEffect

TWILIO_ERRORS: Mapping[int, ErrorEffect] = {
    20429: ErrorEffect.RETRY,  # too many requests
    21211: ErrorEffect.INVALID_RECIPIENT,  # invalid 'To' phone number
    21408: ErrorEffect.FINAL,  # permission to send to this region is not enabled (account)
    21610: ErrorEffect.OPT_OUT,  # attempt to send to an unsubscribed recipient
    21611: ErrorEffect.RETRY,  # the 'From' number has too many messages queued
    21614: ErrorEffect.INVALID_RECIPIENT,  # 'To' is not a valid mobile number
    21635: ErrorEffect.INVALID_RECIPIENT,  # 'To' is a landline: Twilio does not attempt it
    30001: ErrorEffect.RETRY,  # queue overflow
    30005: ErrorEffect.INVALID_RECIPIENT,  # unknown destination handset
    30006: ErrorEffect.INVALID_RECIPIENT,  # landline or unreachable carrier
    30007: ErrorEffect.FINAL,  # filtered by the carrier: about the message, not the number
}
# what a final error says about the recipient (None: nothing)
RECIPIENT_EFFECTS = frozenset({ErrorEffect.INVALID_RECIPIENT, ErrorEffect.OPT_OUT})


def effect_of(code: int | str | None) -> ErrorEffect | None:
    """What Twilio's error `code` means; None for a code not in the table (or none)."""
    if code is None:
        return None
    try:
        return TWILIO_ERRORS.get(int(code))
    except ValueError:
        return None


def recipient_effect(code: int | str | None) -> ErrorEffect | None:
    """What a final error says of the number: invalid, opted out, or nothing (None)."""
    effect = effect_of(code)
    return effect if effect in RECIPIENT_EFFECTS else None


def is_final(code: int | str | None) -> bool:
    """Whether the code is a final refusal of the message (not one to try again)."""
    effect = effect_of(code)
    return effect is not None and effect is not ErrorEffect.RETRY
