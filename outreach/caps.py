"""Frequency caps: per-borrower rolling windows, reserved atomically in Redis.

One sorted set per borrower holds every reservation of the longest window as
`<channel>:<message id>` scored by its time in ms. A Lua script checks every rule of the
message (SMS per day and per week, email per day and per week, any channel per day) and adds
the reservation only if all of them allow it, so no number of concurrent workers can exceed
a cap.

Redis is not the source of truth: the message log is. The set carries a marker member
(`!loaded`); when it is missing (Redis restarted, was flushed, the key expired) the reserver
loads the borrower's reservations of the last week from the log and seeds the set in the same
script that reserves, before anything else is counted. The pipeline records a message as
holding a reservation *before* calling `reserve`, so a rebuild always sees reservations in
flight; a message finding its own id already in the set (put there by a rebuild) counts the
others only, and takes itself out again if refused. Redis unreachable means no send
(`CapUnavailable`), never a free pass.

A reservation belongs to the dispatch attempt that made it: its member names the attempt
(`<channel>:<message id>@<attempt>`), and only that attempt can give it back. A second
attempt at the same message (a duplicate delivery) is refused (`Reason.CLAIMED`, nothing
changed) unless it holds the message's lease (`leases`), which means the first attempt lost
it: then the reservation passes to it, still counted once. A rebuilt entry names no attempt
(the log does not know it) and becomes the reserving attempt's own.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from outreach.domain import BorrowerState, Channel, Decision, DecisionKind, Purpose, Reason
from outreach.errors import CapUnavailable
from outreach.lua import lua_script
from outreach.policy import Policy, contact_rules, counts_against_caps
from outreach.policy.model import CapRule

__all__ = [
    "CapRequest",
    "CapReserver",
    "CapUnavailable",
    "History",
    "HistoryEntry",
    "HistoryOfMany",
]

# (message id, channel, when it reserved) for each message holding a reservation
HistoryEntry = tuple[str, Channel | str, dt.datetime]
History = Callable[[str, dt.datetime], Iterable[HistoryEntry]]
# the same for many borrowers at once: borrower id -> entries (a borrower with none may be left out)
HistoryOfMany = Callable[[Sequence[str], dt.datetime], Mapping[str, Iterable[HistoryEntry]]]


@dataclass(frozen=True)
class CapRequest:
    """One message asking for its cap slots (the arguments of `CapReserver.reserve`)."""

    borrower_id: str
    channel: Channel
    message_id: str
    purpose: Purpose
    borrower: BorrowerState | None = None
    # the dispatch attempt asking ("" for none), and the key of the message's lease if the
    # attempt holds it (see `leases`)
    attempt: str = ""
    lease_key: str | None = None


DEFAULT_PREFIX = "outreach:caps:"
# Reservation times from the log come from worker clocks, not Redis's; rebuilt entries are
# pushed this much later so a worker clock running behind cannot shorten a window.
DEFAULT_CLOCK_SKEW = dt.timedelta(seconds=60)
# Keys outlive the longest window by this much, so an idle borrower's set expires on its own.
_KEY_MARGIN = dt.timedelta(days=1)

_LOADED = "!loaded"

_RESERVE = lua_script("caps_reserve")


class CapReserver:
    """Reserves frequency-cap slots for messages in Redis, rebuilding from the log on loss."""

    def __init__(
        self,
        redis_client: redis.Redis,
        policy: Policy,
        *,
        history: History,
        history_of_many: HistoryOfMany | None = None,
        prefix: str = DEFAULT_PREFIX,
        clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
    ) -> None:
        self.redis = redis_client
        self.policy = policy
        self.history = history
        self.history_of_many = history_of_many
        self.prefix = prefix
        self.clock_skew = clock_skew
        self._script = redis_client.register_script(_RESERVE)
        # the policy is immutable: the rules for an unknown borrower are worked out once
        self._strictest = policy.strictest_caps()

    def key(self, borrower_id: str) -> str:
        return f"{self.prefix}{borrower_id}"

    def reserve(
        self,
        borrower_id: str,
        channel: Channel,
        message_id: str,
        purpose: Purpose,
        *,
        now_ms: int | None = None,
        borrower: BorrowerState | None = None,
        attempt: str = "",
        lease_key: str | None = None,
    ) -> Decision:
        """Take a slot in every window of this message, or none.

        `send` (detail `cap=reserved`, `reserved_at_ms`) or `wait(FREQUENCY_CAP, until, rule=…)`
        with `until` the instant the blocking reservation leaves its window. Exempt purposes
        answer `send` (detail `cap=exempt`) without touching Redis. Pass `borrower` so that
        the caps of the borrower's jurisdiction apply; without it the strictest caps of any
        jurisdiction apply (a US-MA limit for everyone), as the cautious reading.
        `now_ms` replaces the Redis clock (the simulator's virtual one).
        `attempt` names the dispatch attempt the reservation is for; `lease_key` is the key of
        the message's lease when the attempt holds it. Another attempt's reservation of the
        message answers `wait(CLAIMED)` without an `until`, and nothing changes.
        Raises `CapUnavailable` when Redis or the message log cannot be read.
        """
        request = CapRequest(
            borrower_id, Channel(channel), message_id, purpose, borrower, attempt, lease_key
        )
        return self.reserve_many([request], now_ms=now_ms)[0]

    def reserve_many(
        self, requests: Sequence[CapRequest], *, now_ms: int | None = None
    ) -> list[Decision]:
        """`reserve` for each request, in order, as if one after the other, in one Redis
        round trip (two more when borrowers' sets must be rebuilt from the log, whose
        history is then read for all of them in one query when `history_of_many` is given).

        Redis runs a pipeline's scripts in order, so a later request of the same borrower
        counts the slots an earlier one took. Raises `CapUnavailable` as `reserve` does; then
        none of the requests may be taken as reserved (some may hold slots, which only
        over-counts until their window passes, as the message log records them as held).
        """
        decisions: list[Decision | None] = [None] * len(requests)
        calls: list[tuple[int, list[str], list[Any], dt.timedelta]] = []
        for index, request in enumerate(requests):
            if not counts_against_caps(request.purpose):
                decisions[index] = Decision.send(Reason.DUE, cap="exempt")
                continue
            if request.borrower is not None:
                rules = contact_rules(self.policy, request.borrower).caps
            else:
                rules = self._strictest
            longest = max(rule.window for rule in rules)
            args: list[Any] = [
                "" if now_ms is None else int(now_ms),
                request.channel.value,
                request.message_id,
                _ms(longest + _KEY_MARGIN),
                _rule_spec(rules),
                request.attempt,
            ]
            keys = [self.key(request.borrower_id)]
            if request.lease_key is not None:
                keys.append(request.lease_key)
            calls.append((index, keys, args, longest))
        if not calls:
            return cast(list[Decision], decisions)
        try:
            results = self._run([(keys, [*args, "noseed"]) for _, keys, args, _ in calls])
            unloaded = [
                (call, result)
                for call, result in zip(calls, results, strict=True)
                if int(result[0]) == 0
            ]
            if unloaded:
                seeds = self._seeds(
                    [requests[index].borrower_id for (index, _, _, _), _ in unloaded],
                    min(
                        _from_ms(int(result[1]) - _ms(longest) - _ms(self.clock_skew))
                        for (_, _, _, longest), result in unloaded
                    ),
                )
                again = self._run(
                    [
                        (keys, [*args, "seed", *seeds.get(requests[index].borrower_id, ())])
                        for (index, keys, args, _), _ in unloaded
                    ]
                )
                rebuilt = {
                    call[0]: result for (call, _), result in zip(unloaded, again, strict=True)
                }
                results = [
                    rebuilt.get(call[0], result)
                    for call, result in zip(calls, results, strict=True)
                ]
        except redis.RedisError as error:
            raise CapUnavailable(f"frequency caps unavailable: {error}") from error
        for (index, _, _, _), result in zip(calls, results, strict=True):
            decisions[index] = _decision(result)
        return cast(list[Decision], decisions)

    def _run(self, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """The reservation script once per (keys, args), in order, in one round trip."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [self._script(keys=keys, args=args)]
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            self._script(keys=keys, args=args, client=pipe)
        return list(pipe.execute())

    def release(self, borrower_id: str, message_id: str, attempt: str = "") -> None:
        """Give back the slots `attempt` holds for a message (after a definite provider
        rejection, or when the message will not go now). Another attempt's reservation of it
        stays: a member names its attempt, so removing exactly this attempt's members is the
        compare-and-delete, in one command."""
        members = [_member(channel.value, message_id, attempt) for channel in Channel]
        try:
            self.redis.zrem(self.key(borrower_id), *members)
        except redis.RedisError as error:
            raise CapUnavailable(f"frequency caps unavailable: {error}") from error

    def release_any(self, borrower_id: str, message_id: str) -> None:
        """Give back every slot held for a message, whichever attempt reserved it: for the
        reconciler, once the attempt that reserved it is known to be gone and the message was
        never handed over."""
        try:
            key = self.key(borrower_id)
            members = [
                member
                for channel in Channel
                for member, _ in self.redis.zscan_iter(key, match=f"{channel.value}:{message_id}*")
            ]
            exact = [
                m
                for m in members
                if (m.decode() if isinstance(m, bytes) else str(m))
                .partition("@")[0]
                .endswith(f":{message_id}")
            ]
            if exact:
                self.redis.zrem(key, *exact)
        except redis.RedisError as error:
            raise CapUnavailable(f"frequency caps unavailable: {error}") from error

    def holdings(self, borrower_id: str) -> list[tuple[str, Channel, dt.datetime]]:
        """The reservations Redis holds for a borrower now (for inspection and tests): the
        message, its channel and reservation time, whichever attempt holds it."""
        try:
            entries = cast(
                list[tuple[bytes | str, float]],
                self.redis.zrangebyscore(self.key(borrower_id), 0, "+inf", withscores=True),
            )
        except redis.RedisError as error:
            raise CapUnavailable(f"frequency caps unavailable: {error}") from error
        result = []
        for raw_member, score in entries:
            member = raw_member.decode() if isinstance(raw_member, bytes) else str(raw_member)
            channel, _, held = member.partition(":")
            message_id = held.partition("@")[0]
            result.append((message_id, Channel(channel), _from_ms(int(score))))
        return result

    def _seeds(self, borrower_ids: Sequence[str], since: dt.datetime) -> dict[str, list[Any]]:
        """The script's seed arguments for each borrower, from the message log."""
        wanted = list(dict.fromkeys(borrower_ids))
        skew = _ms(self.clock_skew)
        seeds: dict[str, list[Any]] = {}
        try:
            if self.history_of_many is not None and len(wanted) > 1:
                found = self.history_of_many(wanted, since)
                histories = {borrower_id: found.get(borrower_id, ()) for borrower_id in wanted}
            else:
                histories = {
                    borrower_id: self.history(borrower_id, since) for borrower_id in wanted
                }
            for borrower_id, entries in histories.items():
                seed = seeds[borrower_id] = []
                for message_id, channel, at in entries:
                    seed.extend((_ms_of(at) + skew, f"{Channel(channel).value}:{message_id}"))
        except Exception as error:
            # without the log (or with one that cannot be read), the caps cannot be known
            raise CapUnavailable(f"message log unavailable for cap rebuild: {error}") from error
        return seeds


def _member(channel: str, message_id: str, attempt: str) -> str:
    """A reservation's member in a borrower's set, as the reservation script writes it."""
    return f"{channel}:{message_id}@{attempt}" if attempt else f"{channel}:{message_id}"


def _decision(result: Any) -> Decision:
    outcome, at_ms = int(result[0]), int(result[1])
    if outcome == 1:
        return Decision.send(Reason.DUE, cap="reserved", reserved_at_ms=str(at_ms))
    if outcome == 3:
        return Decision(DecisionKind.WAIT, Reason.CLAIMED, None, {"cap": "held_by_another_attempt"})
    rule = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
    return Decision.wait(Reason.FREQUENCY_CAP, _from_ms(int(result[3])), rule=rule)


@functools.lru_cache(maxsize=64)
def _rule_spec(rules: tuple[CapRule, ...]) -> str:
    """The rules as the script reads them; few distinct sets exist, so each is built once."""
    groups = []
    for rule in rules:
        scope = "any" if rule.channel is None else rule.channel.value
        groups.append(f"{rule.name} {scope} {rule.limit} {_ms(rule.window)}")
    return " ".join(groups)


def _ms(span: dt.timedelta) -> int:
    return int(span.total_seconds() * 1000)


def _ms_of(moment: dt.datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        # a naive time from the log is read as UTC, the store's convention
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
