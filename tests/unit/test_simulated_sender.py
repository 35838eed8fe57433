"""The simulator's provider: SPEC §10's outcomes on a virtual clock, reproducible ids."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from outreach.channels.base import Outgoing, ProviderRejected
from outreach.channels.simulated import DELIVERY_DELAY, RECENT_SENDS, SimulatedSender
from outreach.domain import Channel

T0 = dt.datetime(2025, 3, 3, 1, 0, tzinfo=dt.UTC)


class VirtualClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def sms(to: str, message_id: str = "m1") -> Outgoing:
    return Outgoing(message_id=message_id, channel=Channel.SMS, to=to, body="Reminder")


def mail(to: str, message_id: str = "e1") -> Outgoing:
    return Outgoing(
        message_id=message_id, channel=Channel.EMAIL, to=to, subject="Reminder", text="Hi"
    )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


def test_ordinary_messages_are_delivered_five_seconds_later(clock: VirtualClock) -> None:
    sender = SimulatedSender(Channel.SMS, clock)

    receipt = sender.send(sms("+8613800138000"))

    assert receipt.status == "sent"
    assert sender.next_outcome_at() == T0 + DELIVERY_DELAY == T0 + dt.timedelta(seconds=5)
    assert sender.due_outcomes(T0 + dt.timedelta(seconds=4.9)) == []
    assert sender.due_outcomes(T0 + dt.timedelta(seconds=5)) == [
        (receipt.provider_id, "delivered", None)
    ]
    assert sender.due_outcomes(T0 + dt.timedelta(days=1)) == []  # each outcome once
    assert sender.next_outcome_at() is None


@pytest.mark.parametrize(
    ("number", "code", "effect"),
    [
        ("+15005550001", "21211", "invalid_recipient"),
        ("+15005550004", "21610", "opt_out"),
        ("+15005550009", "21614", "invalid_recipient"),
    ],
)
def test_magic_numbers_are_refused(
    clock: VirtualClock, number: str, code: str, effect: str
) -> None:
    sender = SimulatedSender(Channel.SMS, clock)

    with pytest.raises(ProviderRejected) as raised:
        sender.send(sms(number))

    assert (raised.value.code, raised.value.effect) == (code, effect)
    assert list(sender.sent) == [] and sender.next_outcome_at() is None


def test_magic_undeliverable_number_is_accepted_then_undelivered(clock: VirtualClock) -> None:
    sender = SimulatedSender(Channel.SMS, clock)

    receipt = sender.send(sms("+15005550002"))

    assert sender.due_outcomes(T0 + DELIVERY_DELAY) == [
        (receipt.provider_id, "undelivered", "30003")
    ]


def test_outcomes_come_in_due_order_as_the_clock_moves(clock: VirtualClock) -> None:
    sender = SimulatedSender(Channel.SMS, clock)
    first = sender.send(sms("+8613800138000", "m1"))
    clock.advance(2)
    second = sender.send(sms("+15005550002", "m2"))
    third = sender.send(sms("+8613800138001", "m3"))

    assert sender.due_outcomes(T0 + dt.timedelta(seconds=5)) == [
        (first.provider_id, "delivered", None)
    ]
    assert sender.next_outcome_at() == T0 + dt.timedelta(seconds=7)
    assert sender.due_outcomes(T0 + dt.timedelta(minutes=1)) == [
        (second.provider_id, "undelivered", "30003"),
        (third.provider_id, "delivered", None),
    ]
    later = T0 + dt.timedelta(seconds=2)
    assert [s.sent_at for s in sender.sent] == [T0, later, later]


def test_email_is_always_delivered_even_to_magic_numbers(clock: VirtualClock) -> None:
    sender = SimulatedSender(Channel.EMAIL, clock)

    receipt = sender.send(mail("+15005550001"))

    assert re.fullmatch(r"<sim-[0-9a-f]{20}@outreach\.simulated>", receipt.provider_id)
    assert sender.due_outcomes(T0 + DELIVERY_DELAY) == [(receipt.provider_id, "delivered", None)]


def test_ids_are_reproducible_run_to_run_and_named_after_their_message(
    clock: VirtualClock,
) -> None:
    def run(order: list[int]) -> dict[str, str]:
        sender = SimulatedSender(Channel.SMS, VirtualClock(T0))
        return {
            f"m{i}": sender.send(sms(f"+86138001380{i:02d}", f"m{i}")).provider_id for i in order
        }

    first = run([0, 1, 2])
    assert first == run([0, 1, 2]) == run([2, 0, 1])  # whatever else was sent before
    assert len(set(first.values())) == 3
    assert all(re.fullmatch(r"SM[0-9a-f]{32}", sid) for sid in first.values())


def test_find_sent_returns_what_was_accepted(clock: VirtualClock) -> None:
    sender = SimulatedSender(Channel.SMS, clock)
    receipt = sender.send(sms("+8613800138000", "m1"))

    assert sender.find_sent(sms("+8613800138000", "m1"), T0) == receipt
    assert sender.find_sent(sms("+8613800138000", "m2"), T0) is None


def test_only_the_latest_sends_are_kept(clock: VirtualClock) -> None:
    sender = SimulatedSender(Channel.SMS, clock)
    for index in range(RECENT_SENDS + 5):
        sender.send(sms("+8613800138000", f"m{index}"))

    assert len(sender.sent) == RECENT_SENDS
    assert sender.sent[-1].outgoing.message_id == f"m{RECENT_SENDS + 4}"
    # every send is still answered for, and found again after a crash
    assert len(sender.due_outcomes(T0 + DELIVERY_DELAY)) == RECENT_SENDS + 5
    assert sender.find_sent(sms("+8613800138000", "m0"), T0) is not None
