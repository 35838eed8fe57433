"""Message leases: which dispatch attempt is working a message now.

A message can reach two workers at once: dramatiq delivers at least once, and the clock
re-enqueues rows left `queued` for minutes (their broker message may have been lost), which a
paced provider's batch still holding them can easily take. The worker that takes a message
first holds its lease; a second delivery finds it held and stands aside, and the clock leaves
leased rows alone, however long their batch takes.

One key per message, `<prefix><message id>`, holds the attempt's token with a short lifetime.
A thread of the worker process renews the leases of every attempt still running, so a lease
outlives its attempt by at most that lifetime: when the process dies (or stalls for that
long), the lease lapses by itself and the message is anyone's again. This is why the lease is
in Redis rather than a refreshed claim on the row: no database write while a provider call
blocks, and no timer guessing whether the worker is still there.

The lease also names the attempt that may hold the message's frequency-cap reservation (see
`caps`): a reservation passes to a new attempt only once the old one has lost the lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from typing import cast

import redis

from outreach.errors import TransientError
from outreach.lua import lua_script

__all__ = ["LeaseUnavailable", "MessageLeases"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "outreach:lease:"
DEFAULT_LIFETIME = dt.timedelta(seconds=30)
# renewed this often within a lifetime: two renewals may fail before a lease lapses
RENEWALS_PER_LIFETIME = 3

_TAKE = lua_script("lease_take")
_RENEW = lua_script("lease_renew")
_GIVE_BACK = lua_script("lease_give_back")


class LeaseUnavailable(TransientError):
    """Raised when message leases cannot be taken or read (Redis unreachable)."""


class MessageLeases:
    """Takes, renews and gives back message leases in Redis for the attempts of a process."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        lifetime: dt.timedelta = DEFAULT_LIFETIME,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.lifetime_ms = int(lifetime.total_seconds() * 1000)
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._give_back = client.register_script(_GIVE_BACK)
        # attempt -> the keys it holds, renewed while it is here
        self._held: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def key(self, message_id: str) -> str:
        return f"{self.prefix}{message_id}"

    def take(self, attempt: str, message_ids: Sequence[str]) -> list[str]:
        """The messages `attempt` holds the lease of now, in order; the others are held by
        another attempt. Raises `LeaseUnavailable` when Redis cannot be reached."""
        if not message_ids:
            return []
        keys = [self.key(message_id) for message_id in message_ids]
        try:
            taken = cast(list[int], self._take(keys=keys, args=[attempt, self.lifetime_ms]))
        except redis.RedisError as error:
            raise LeaseUnavailable(f"message leases unavailable: {error}") from error
        mine = [message_id for message_id, flag in zip(message_ids, taken, strict=True) if flag]
        if mine:
            with self._lock:
                self._held[attempt] = [self.key(message_id) for message_id in mine]
                if self._renewer is None:
                    self._renewer = threading.Thread(
                        target=self._renew_while_held, name="message-leases", daemon=True
                    )
                    self._renewer.start()
        return mine

    def give_back(self, attempt: str, message_ids: Sequence[str]) -> None:
        """End the attempt's leases of these messages (those it still holds)."""
        with self._lock:
            self._held.pop(attempt, None)
        if not message_ids:
            return
        try:
            self._give_back(
                keys=[self.key(message_id) for message_id in message_ids], args=[attempt]
            )
        except redis.RedisError as error:
            # left alone, they lapse within their lifetime: the messages wait that long at most
            log.warning("could not give back %d message leases: %s", len(message_ids), error)

    def held(self, message_ids: Sequence[str]) -> set[str]:
        """The messages some attempt holds the lease of now. Raises `LeaseUnavailable`."""
        if not message_ids:
            return set()
        try:
            values = self.client.mget([self.key(message_id) for message_id in message_ids])
        except redis.RedisError as error:
            raise LeaseUnavailable(f"message leases unavailable: {error}") from error
        return {
            message_id
            for message_id, value in zip(message_ids, values, strict=True)
            if value is not None
        }

    def _renew_while_held(self) -> None:
        """Renew every running attempt's leases until none is left (the thread then ends)."""
        interval = self.lifetime_ms / 1000 / RENEWALS_PER_LIFETIME
        while True:
            time.sleep(interval)
            with self._lock:
                if not self._held:
                    self._renewer = None
                    return
                held = [(attempt, list(keys)) for attempt, keys in self._held.items()]
            for attempt, keys in held:
                try:
                    self._renew(keys=keys, args=[attempt, self.lifetime_ms])
                except redis.RedisError as error:
                    log.warning("could not renew the leases of attempt %s: %s", attempt, error)
