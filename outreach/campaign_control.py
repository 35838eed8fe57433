"""What holds a campaign's messages at the moment of hand-over, across every worker: its halt
flag (paused or cancelled), its throttle (`throttle_per_minute`), and the hand-overs in
flight a pause waits for. In Redis, like the caps and the provider rate.

The database says what a campaign's status is; the flag is how a pause reaches a worker that
has already gated a message and is about to hand it over. A worker asks `hand_over` just
before it marks messages `sending`: a halted campaign's messages wait, and the ones let
through are recorded in flight until `handed_over` is called after the provider answered.
`halt` sets the flag and then waits until nothing let through before it is still in flight,
so once it returns nothing of the campaign reaches a provider any more. Redis unreachable
means the message waits (`CampaignCheckUnavailable`), never a free pass.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from outreach.errors import TransientError
from outreach.lua import lua_script

DEFAULT_PREFIX = "outreach:campaign:"
# a hand-over in flight for longer than this is taken as finished (its worker is gone)
IN_FLIGHT_FOR_AT_MOST = dt.timedelta(seconds=60)
_HAND_OVER = lua_script("campaign_hand_over")


class CampaignCheckUnavailable(TransientError):
    """Redis could not say whether a campaign may hand over a message: it waits."""


@dataclass(frozen=True)
class HandOver:
    """One campaign message asking to be handed over (`member`: message id and attempt)."""

    campaign_id: str
    member: str
    throttle_per_minute: int | None


@dataclass(frozen=True)
class HandOverAnswer:
    allowed: bool
    # not allowed: halted (paused or cancelled), else throttled until this instant
    halted: bool = False
    until: dt.datetime | None = None


class CampaignControl:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self._script = client.register_script(_HAND_OVER)
        self._sleep = sleep

    def _keys(self, campaign_id: str) -> list[str]:
        base = f"{self.prefix}{campaign_id}:"
        return [base + "halted", base + "minute", base + "in_flight"]

    def hand_over(
        self, requests: Sequence[HandOver], *, now_ms: int | None = None
    ) -> list[HandOverAnswer]:
        """Whether each message may be handed over now, in order, in one round trip.
        Raises `CampaignCheckUnavailable` when Redis cannot answer."""
        if not requests:
            return []
        try:
            pipe = self.redis.pipeline(transaction=False)
            for request in requests:
                self._script(
                    keys=self._keys(request.campaign_id),
                    args=[
                        "" if now_ms is None else int(now_ms),
                        request.throttle_per_minute or 0,
                        request.member,
                    ],
                    client=pipe,
                )
            results: list[Any] = pipe.execute()
        except redis.RedisError as error:
            raise CampaignCheckUnavailable(f"campaign checks unavailable: {error}") from error
        answers = []
        for result in results:
            outcome, at_ms = int(result[0]), int(result[1])
            if outcome == 1:
                answers.append(HandOverAnswer(True))
            elif outcome == 0:
                answers.append(HandOverAnswer(False, halted=True))
            else:
                until = dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.UTC)
                answers.append(HandOverAnswer(False, until=until))
        return answers

    def handed_over(self, done: Sequence[tuple[str, str]]) -> None:
        """These (campaign id, member) are no longer in flight: the provider answered, or
        they were not handed over after all. A failure only makes a pause wait longer."""
        if not done:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for campaign_id, member in done:
                pipe.zrem(self._keys(campaign_id)[2], member)
            pipe.execute()
        except redis.RedisError:
            pass

    def halt(self, campaign_id: str, *, wait: float = 5.0) -> None:
        """Set the campaign's halt flag, then wait (up to `wait` seconds) until no hand-over
        let through before it is still in flight. Raises `CampaignCheckUnavailable`."""
        halted, _, in_flight = self._keys(campaign_id)
        try:
            self.redis.set(halted, "1")
            deadline = time.monotonic() + wait
            while True:
                now_ms = int(time.time() * 1000)
                horizon = now_ms - int(IN_FLIGHT_FOR_AT_MOST.total_seconds() * 1000)
                if not self.redis.zcount(in_flight, horizon, "+inf"):
                    return
                if time.monotonic() >= deadline:
                    return
                self._sleep(0.01)
        except redis.RedisError as error:
            raise CampaignCheckUnavailable(f"campaign checks unavailable: {error}") from error

    def unhalt(self, campaign_id: str) -> None:
        try:
            self.redis.delete(self._keys(campaign_id)[0])
        except redis.RedisError as error:
            raise CampaignCheckUnavailable(f"campaign checks unavailable: {error}") from error

    def sync(self, halted: Sequence[str], running: Sequence[str]) -> None:
        """Make the flags say what the database says (the clock, now and then): a pause
        whose flag was lost with Redis, or a flag left by a request that failed after it."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for campaign_id in halted:
                pipe.set(self._keys(campaign_id)[0], "1")
            for campaign_id in running:
                pipe.delete(self._keys(campaign_id)[0])
            pipe.execute()
        except redis.RedisError as error:
            raise CampaignCheckUnavailable(f"campaign checks unavailable: {error}") from error
