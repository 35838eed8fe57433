"""The campaign control on real Redis: the throttle across callers, the halt flag, and a
halt that waits for hand-overs in flight."""

from __future__ import annotations

import threading
import time

import redis

from outreach.campaign_control import CampaignControl, HandOver


def test_the_throttle_lets_through_at_most_its_number_a_minute(
    redis_client: redis.Redis,
) -> None:
    first = CampaignControl(redis_client)
    second = CampaignControl(redis_client)
    now_ms = 1_800_000_000_000
    asks = [HandOver("cmp_t", f"m{i}@a", 5) for i in range(8)]
    answers = first.hand_over(asks[:4], now_ms=now_ms) + second.hand_over(
        asks[4:], now_ms=now_ms + 1000
    )
    assert [answer.allowed for answer in answers] == [True] * 5 + [False] * 3
    refused = answers[5]
    assert not refused.halted and refused.until is not None
    assert int(refused.until.timestamp() * 1000) == now_ms + 60_001
    # a minute after the first, its slot is free again
    later = first.hand_over([HandOver("cmp_t", "m9@a", 5)], now_ms=now_ms + 60_001)
    assert later[0].allowed
    # another campaign has its own minute
    assert first.hand_over([HandOver("cmp_u", "x@a", 5)], now_ms=now_ms)[0].allowed


def test_a_halt_refuses_hand_overs_and_waits_for_those_in_flight(
    redis_client: redis.Redis,
) -> None:
    control = CampaignControl(redis_client)
    assert control.hand_over([HandOver("cmp_h", "m1@a", None)])[0].allowed
    halted_at: list[float] = []

    def halt() -> None:
        control.halt("cmp_h")
        halted_at.append(time.monotonic())

    thread = threading.Thread(target=halt)
    thread.start()
    time.sleep(0.3)
    assert not halted_at, "the halt waits while m1 is being handed over"
    refused = control.hand_over([HandOver("cmp_h", "m2@a", None)])[0]
    assert not refused.allowed and refused.halted
    finished = time.monotonic()
    control.handed_over([("cmp_h", "m1@a")])
    thread.join(timeout=5)
    assert halted_at and halted_at[0] >= finished
    control.unhalt("cmp_h")
    assert control.hand_over([HandOver("cmp_h", "m3@a", None)])[0].allowed
