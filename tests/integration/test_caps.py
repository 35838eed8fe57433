"""Frequency caps against a real Redis: every window, all or nothing, release, rebuild."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from outreach.caps import CapReserver, CapUnavailable, HistoryEntry
from outreach.domain import Address, Channel, DecisionKind, Purpose, Reason
from outreach.errors import TransientError
from tests.integration.caps_fixtures import (  # noqa: F401 - fixtures
    free_port,
    key_prefix,
    private_redis,
    private_redis_url,
    shared_redis,
)
from tests.unit.policy_fixtures import borrower, default_policy, us_borrower

pytestmark = pytest.mark.redis

T0 = 1_780_000_000_000  # ms, a fixed virtual instant
HOUR = 3_600_000
DAY = 24 * HOUR
SMS, EMAIL = Channel.SMS, Channel.EMAIL
DUNNING = Purpose.DUNNING
# no jurisdiction override applies to this borrower: the policy's own caps
SHANGHAI_BORROWER = borrower()


class Log:
    """A stand-in message log: what the pipeline would hand over for a rebuild."""

    def __init__(self, entries: Iterable[HistoryEntry] = ()) -> None:
        self.entries = list(entries)
        self.calls: list[tuple[str, dt.datetime]] = []

    def __call__(self, borrower_id: str, since: dt.datetime) -> list[HistoryEntry]:
        self.calls.append((borrower_id, since))
        return [entry for entry in self.entries if entry[2] >= since]


def unreachable_redis() -> redis.Redis:
    """A client of a port nobody listens on, without the client's own retries."""
    return redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def caps(private_redis: redis.Redis, log: Log) -> CapReserver:  # noqa: F811
    return CapReserver(private_redis, default_policy(), history=log)


def test_first_sms_is_reserved_and_a_second_within_a_day_waits(caps: CapReserver) -> None:
    first = caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0)
    assert first.may_send
    assert first.detail == {"cap": "reserved", "reserved_at_ms": str(T0)}
    second = caps.reserve("B1", SMS, "m2", DUNNING, now_ms=T0 + HOUR)
    assert second.kind is DecisionKind.WAIT
    assert second.reason is Reason.FREQUENCY_CAP
    assert second.detail == {"rule": "sms_per_day"}
    assert second.until == at(T0 + DAY)
    # exactly 24 hours later the first leaves the window
    assert caps.reserve("B1", SMS, "m2", DUNNING, now_ms=T0 + DAY).may_send


def test_three_sms_a_week(caps: CapReserver) -> None:
    for day in range(3):
        assert caps.reserve(
            "B1", SMS, f"m{day}", DUNNING, now_ms=T0 + day * DAY, borrower=SHANGHAI_BORROWER
        ).may_send
    fourth = caps.reserve("B1", SMS, "m3", DUNNING, now_ms=T0 + 3 * DAY, borrower=SHANGHAI_BORROWER)
    assert fourth.detail == {"rule": "sms_per_week"}
    assert fourth.until == at(T0 + 7 * DAY)
    assert caps.reserve(
        "B1", SMS, "m3", DUNNING, now_ms=T0 + 7 * DAY, borrower=SHANGHAI_BORROWER
    ).may_send


def test_one_email_a_day_and_four_a_week(caps: CapReserver) -> None:
    assert caps.reserve("B1", EMAIL, "e0", DUNNING, now_ms=T0, borrower=SHANGHAI_BORROWER).may_send
    assert caps.reserve(
        "B1", EMAIL, "e1", DUNNING, now_ms=T0 + HOUR, borrower=SHANGHAI_BORROWER
    ).detail == {"rule": "email_per_day"}
    for day in range(1, 4):
        assert caps.reserve(
            "B1", EMAIL, f"e{day}", DUNNING, now_ms=T0 + day * DAY, borrower=SHANGHAI_BORROWER
        ).may_send
    fifth = caps.reserve(
        "B1", EMAIL, "e4", DUNNING, now_ms=T0 + 4 * DAY, borrower=SHANGHAI_BORROWER
    )
    assert fifth.detail == {"rule": "email_per_week"}
    assert fifth.until == at(T0 + 7 * DAY)


def test_any_channel_per_day_binds_across_channels(private_redis: redis.Redis, log: Log) -> None:  # noqa: F811
    from tests.unit.policy_fixtures import default_document, policy_from

    document = default_document()
    document["caps"].update(sms_per_day=2, email_per_day=2, any_per_day=3)
    caps = CapReserver(private_redis, policy_from(document), history=log)
    assert caps.reserve("B1", SMS, "s1", DUNNING, now_ms=T0).may_send
    assert caps.reserve("B1", EMAIL, "e1", DUNNING, now_ms=T0 + 1).may_send
    assert caps.reserve("B1", SMS, "s2", DUNNING, now_ms=T0 + 2).may_send
    refused = caps.reserve("B1", EMAIL, "e2", DUNNING, now_ms=T0 + 3)
    assert refused.detail == {"rule": "any_per_day"}
    assert refused.until == at(T0 + DAY)


def test_default_any_per_day_allows_one_of_each_channel(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "s1", DUNNING, now_ms=T0).may_send
    assert caps.reserve("B1", EMAIL, "e1", DUNNING, now_ms=T0 + 1).may_send
    assert not caps.reserve("B1", EMAIL, "e2", DUNNING, now_ms=T0 + 2).may_send


def test_refusal_reserves_nothing_in_any_window(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "s1", DUNNING, now_ms=T0).may_send
    before = caps.holdings("B1")
    assert not caps.reserve("B1", SMS, "s2", DUNNING, now_ms=T0 + 1).may_send
    assert caps.holdings("B1") == before
    # the email slot of that day is still free: the refused SMS did not take an `any` slot
    assert caps.reserve("B1", EMAIL, "e1", DUNNING, now_ms=T0 + 2).may_send


def test_when_two_rules_block_the_later_release_is_reported(caps: CapReserver) -> None:
    for day in (0, 1, 2):
        assert caps.reserve(
            "B1", SMS, f"s{day}", DUNNING, now_ms=T0 + day * DAY, borrower=SHANGHAI_BORROWER
        ).may_send
    refused = caps.reserve(
        "B1", SMS, "s3", DUNNING, now_ms=T0 + 2 * DAY + HOUR, borrower=SHANGHAI_BORROWER
    )
    # day blocks until day 3; week blocks until day 7: the message cannot go before day 7
    assert refused.detail == {"rule": "sms_per_week"}
    assert refused.until == at(T0 + 7 * DAY)


def test_borrowers_are_counted_apart(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0).may_send
    assert caps.reserve("B2", SMS, "m2", DUNNING, now_ms=T0).may_send


@pytest.mark.parametrize(
    "purpose",
    [
        Purpose.OPTOUT_CONFIRMATION,
        Purpose.OPTIN_CONFIRMATION,
        Purpose.HELP_REPLY,
        Purpose.PAYMENT_CONFIRMATION,
    ],
)
def test_exempt_purposes_are_neither_checked_nor_counted(
    caps: CapReserver, purpose: Purpose
) -> None:
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0).may_send
    exempt = caps.reserve("B1", SMS, "x1", purpose, now_ms=T0 + 1)
    assert exempt.may_send and exempt.detail == {"cap": "exempt"}
    assert [entry[0] for entry in caps.holdings("B1")] == ["m1"]


def test_exempt_purposes_need_no_redis() -> None:
    down = unreachable_redis()
    caps = CapReserver(down, default_policy(), history=Log())
    assert caps.reserve("B1", SMS, "x1", Purpose.HELP_REPLY).may_send


def test_cease_confirmation_and_campaigns_are_capped(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "m1", Purpose.CAMPAIGN, now_ms=T0).may_send
    assert not caps.reserve("B1", SMS, "m2", Purpose.CEASE_CONFIRMATION, now_ms=T0 + 1).may_send


def test_release_gives_the_slot_back(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0).may_send
    caps.release("B1", "m1")
    assert caps.holdings("B1") == []
    assert caps.reserve("B1", SMS, "m2", DUNNING, now_ms=T0 + 1).may_send


def test_retrying_a_reservation_does_not_count_it_twice(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0).may_send
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0 + 5).may_send
    assert [entry[0] for entry in caps.holdings("B1")] == ["m1"]


def test_lost_redis_data_is_rebuilt_from_the_log_before_counting(
    private_redis: redis.Redis,  # noqa: F811
) -> None:
    log = Log([("old", SMS, at(T0 - 2 * HOUR)), ("older", EMAIL, at(T0 - 8 * DAY))])
    caps = CapReserver(private_redis, default_policy(), history=log)
    refused = caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0)
    assert refused.detail == {"rule": "sms_per_day"}
    # rebuilt entries are counted from a minute later than the log says (clock skew)
    assert refused.until == at(T0 - 2 * HOUR + DAY + 60_000)
    [(borrower_id, since)] = log.calls
    assert borrower_id == "B1"
    assert since == at(T0 - 7 * DAY - 60_000)
    # loaded once: the marker says so
    assert caps.reserve("B1", EMAIL, "e1", DUNNING, now_ms=T0).may_send
    assert len(log.calls) == 1
    log.entries.append(("e1", EMAIL, at(T0)))  # as the pipeline records it
    private_redis.flushall()
    assert not caps.reserve("B1", EMAIL, "e2", DUNNING, now_ms=T0 + 1).may_send
    assert len(log.calls) == 2


def test_own_id_from_a_rebuild_is_not_counted_twice(private_redis: redis.Redis) -> None:  # noqa: F811
    # the pipeline recorded m1 as holding a reservation, then Redis lost everything
    log = Log([("m1", SMS, at(T0 - 10))])
    caps = CapReserver(private_redis, default_policy(), history=log)
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0).may_send
    assert [entry[0] for entry in caps.holdings("B1")] == ["m1"]
    assert not caps.reserve("B1", SMS, "m2", DUNNING, now_ms=T0 + 1).may_send


def test_own_id_from_a_rebuild_is_removed_on_refusal(private_redis: redis.Redis) -> None:  # noqa: F811
    log = Log([("m0", SMS, at(T0 - HOUR)), ("m1", SMS, at(T0 - 10))])
    caps = CapReserver(private_redis, default_policy(), history=log)
    refused = caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0)
    assert refused.detail == {"rule": "sms_per_day"}
    assert [entry[0] for entry in caps.holdings("B1")] == ["m0"]


def test_without_the_borrower_the_strictest_jurisdiction_caps_apply(caps: CapReserver) -> None:
    for day in (0, 1):
        assert caps.reserve("B1", SMS, f"s{day}", DUNNING, now_ms=T0 + day * DAY).may_send
    third = caps.reserve("B1", SMS, "s2", DUNNING, now_ms=T0 + 2 * DAY)
    assert third.detail == {"rule": "sms_per_week"}  # US-MA allows two a week


def test_jurisdiction_caps_apply_when_the_borrower_is_given(caps: CapReserver) -> None:
    ma = us_borrower(address=Address(country="US", region="MA"))
    for day in (0, 1):
        decision = caps.reserve("B1", SMS, f"s{day}", DUNNING, now_ms=T0 + day * DAY, borrower=ma)
        assert decision.may_send
    third = caps.reserve("B1", SMS, "s2", DUNNING, now_ms=T0 + 2 * DAY, borrower=ma)
    assert third.detail == {"rule": "sms_per_week"}
    # a New York borrower may have a third
    ny = us_borrower()
    assert caps.reserve("B2", SMS, "n0", DUNNING, now_ms=T0, borrower=ny).may_send
    assert caps.reserve("B2", SMS, "n1", DUNNING, now_ms=T0 + DAY, borrower=ny).may_send
    assert caps.reserve("B2", SMS, "n2", DUNNING, now_ms=T0 + 2 * DAY, borrower=ny).may_send


def test_redis_clock_is_used_without_a_virtual_one(
    caps: CapReserver,
    private_redis: redis.Redis,  # noqa: F811
) -> None:
    seconds, micros = private_redis.time()
    decision = caps.reserve("B1", SMS, "m1", DUNNING)
    reserved_at = int(decision.detail["reserved_at_ms"])
    assert 0 <= reserved_at - (seconds * 1000 + micros // 1000) < 5_000


def test_keys_expire_after_the_longest_window(
    caps: CapReserver,
    private_redis: redis.Redis,  # noqa: F811
) -> None:
    caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0)
    ttl_ms = private_redis.pttl(caps.key("B1"))
    assert 7 * DAY < ttl_ms <= 8 * DAY


def test_unreachable_redis_raises_cap_unavailable_never_allows() -> None:
    down = unreachable_redis()
    caps = CapReserver(down, default_policy(), history=Log())
    with pytest.raises(CapUnavailable) as caught:
        caps.reserve("B1", SMS, "m1", DUNNING)
    assert isinstance(caught.value, TransientError)
    with pytest.raises(CapUnavailable):
        caps.release("B1", "m1")


def test_unreadable_log_raises_cap_unavailable(private_redis: redis.Redis) -> None:  # noqa: F811
    def broken(borrower_id: str, since: dt.datetime) -> list[HistoryEntry]:
        raise OSError("database is down")

    caps = CapReserver(private_redis, default_policy(), history=broken)
    with pytest.raises(CapUnavailable, match="message log unavailable"):
        caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0)
    assert private_redis.exists(caps.key("B1")) == 0


def test_works_on_the_shared_server_too(shared_redis: redis.Redis, key_prefix: str) -> None:  # noqa: F811
    caps = CapReserver(shared_redis, default_policy(), history=Log(), prefix=key_prefix)
    assert caps.reserve("B1", SMS, "m1", DUNNING).may_send
    assert not caps.reserve("B1", SMS, "m2", DUNNING).may_send


def test_a_reservation_is_given_back_only_by_the_attempt_that_made_it(caps: CapReserver) -> None:
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0, attempt="first").may_send
    caps.release("B1", "m1", "second")
    caps.release("B1", "m1")
    assert [entry[0] for entry in caps.holdings("B1")] == ["m1"]
    assert not caps.reserve("B1", SMS, "m2", DUNNING, now_ms=T0 + 1, attempt="third").may_send
    caps.release("B1", "m1", "first")
    assert caps.holdings("B1") == []


def test_another_attempt_without_the_lease_neither_shares_nor_takes_a_reservation(
    caps: CapReserver,
) -> None:
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0, attempt="first").may_send
    before = caps.holdings("B1")
    second = caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0 + 5, attempt="second")
    assert (second.kind, second.reason, second.until) == (
        DecisionKind.WAIT,
        Reason.CLAIMED,
        None,
    )
    assert caps.holdings("B1") == before
    # the first attempt still holds it: it can give it back, the second could not
    caps.release("B1", "m1", "second")
    assert caps.holdings("B1") == before
    caps.release("B1", "m1", "first")
    assert caps.holdings("B1") == []


def test_only_the_holder_of_the_messages_lease_reserves_for_it(
    caps: CapReserver,
    private_redis: redis.Redis,  # noqa: F811
) -> None:
    private_redis.set("lease:m1", "first")
    late = caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0, attempt="second", lease_key="lease:m1")
    assert late.reason is Reason.CLAIMED
    assert caps.holdings("B1") == []
    assert caps.reserve(
        "B1", SMS, "m1", DUNNING, now_ms=T0, attempt="first", lease_key="lease:m1"
    ).may_send


def test_a_lapsed_attempts_reservation_passes_to_the_new_lease_holder_counted_once(
    caps: CapReserver,
    private_redis: redis.Redis,  # noqa: F811
) -> None:
    private_redis.set("lease:m1", "first")
    assert caps.reserve(
        "B1", SMS, "m1", DUNNING, now_ms=T0, attempt="first", lease_key="lease:m1"
    ).may_send
    # the first attempt's worker died: its lease lapsed and a second attempt took it
    private_redis.set("lease:m1", "second")
    assert caps.reserve(
        "B1", SMS, "m1", DUNNING, now_ms=T0 + 5, attempt="second", lease_key="lease:m1"
    ).may_send
    # one entry, at the later time (the message goes no sooner than the second attempt)
    assert caps.holdings("B1") == [("m1", SMS, at(T0 + 5))]
    caps.release("B1", "m1", "first")
    assert not caps.reserve("B1", SMS, "m2", DUNNING, now_ms=T0 + 6, attempt="third").may_send
    caps.release("B1", "m1", "second")
    assert caps.holdings("B1") == []


def test_a_reservation_rebuilt_from_the_log_becomes_the_reserving_attempts_own(
    private_redis: redis.Redis,  # noqa: F811
) -> None:
    # the pipeline recorded m1 as holding a reservation, then Redis lost everything
    caps = CapReserver(private_redis, default_policy(), history=Log([("m1", SMS, at(T0 - 10))]))
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0, attempt="first").may_send
    assert [entry[0] for entry in caps.holdings("B1")] == ["m1"]
    assert caps.reserve("B1", SMS, "m1", DUNNING, now_ms=T0, attempt="other").reason is (
        Reason.CLAIMED
    )
    caps.release("B1", "m1", "first")
    assert caps.holdings("B1") == []
