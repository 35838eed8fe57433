"""Worker leases: each worker process tells Redis, every few seconds, that it lives and which
messages it is working on, so that the clock knows — rather than guesses from a timer — that
the worker holding a message is gone.

Keys, under `outreach:workers:`:
  alive:<token>   exists while the process beats; expires `ttl` after its last beat
  held:<token>    the ids of the batches it is working on, rewritten at every beat and kept
                  long after `alive`, so it can still be read once the worker is dead
  registry        token -> last beat (ms), so a worker that died holding only `queued`
                  messages is found too

What makes acting on "gone" safe (no message sent twice):
- A worker hands a message to a provider only while its lease is continuous: the same token,
  renewed less than ttl/2 ago (`may_hand_over`). A process that missed renewals (frozen, cut
  off from Redis) takes a new token and never hands over a message it marked under the old
  one: that message is left to the reconciler, which may already be acting on it.
- The clock acts on a lease only after seeing it gone for a further ttl (`LeaseWatch`): a
  Redis that lost its keys (restart, flush) has them back from the next beat, within ttl/6.
  So when the reconciler asks the provider, the last hand-over the dead worker could have
  started began at least 1.5 ttl earlier, longer than a provider call may last (the Twilio
  client gives up after 10 s; the default ttl is 20 s, the least allowed 8 s).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import redis

log = logging.getLogger(__name__)

PREFIX = "outreach:workers:"
DEFAULT_TTL_SECONDS = 20.0
# beats per ttl: a lease survives a few failed beats before it lapses
BEATS_PER_TTL = 6
# how long a dead worker's held set stays readable, in ttls
HELD_KEPT_FOR_TTLS = 60
# a registry entry not renewed for this long belongs to a worker long reconciled
REGISTRY_FORGETS_AFTER_MS = 24 * 3600 * 1000


def new_token() -> str:
    host = socket.gethostname().split(".")[0][:24] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class WorkerLease:
    """One worker process's lease, renewed by a thread of its own (`start`)."""

    def __init__(
        self, client: redis.Redis, ttl: float = DEFAULT_TTL_SECONDS, *, prefix: str = PREFIX
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = ttl
        self._client = client
        self._prefix = prefix
        self._lock = threading.Lock()
        self._token = new_token()
        # monotonic time of the last beat Redis took, for the current token
        self._renewed_at: float | None = None
        self._held: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        with self._lock:
            return self._token

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="worker-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and give the lease up: call it only once nothing is in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
            self._thread = None
        token = self.token
        try:
            self._client.delete(self._key("alive", token), self._key("held", token))
            self._client.zrem(self._key("registry"), token)
        except redis.RedisError as error:
            log.warning("worker lease %s not given up (it expires on its own): %s", token, error)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / BEATS_PER_TTL):
            self.beat()

    def beat(self) -> bool:
        """Renew the lease and publish what it holds; False when Redis did not take it."""
        started = time.monotonic()
        with self._lock:
            if self._renewed_at is not None and started - self._renewed_at >= self.ttl / 2:
                # the clock may have taken this worker for dead: what it marked `sending`
                # under the old token is the reconciler's now
                log.warning("worker lease %s lapsed; continuing under a new one", self._token)
                self._token = new_token()
                self._renewed_at = None
            token = self._token
            held = list(self._held)
        held_key = self._key("held", token)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._key("alive", token), "1", px=int(self.ttl * 1000))
            pipe.delete(held_key)
            if held:
                pipe.sadd(held_key, *held)
                pipe.pexpire(held_key, self._held_kept_ms)
            pipe.zadd(self._key("registry"), {token: int(time.time() * 1000)})
            pipe.execute()
        except redis.RedisError as error:
            log.warning("worker lease %s not renewed: %s", token, error)
            return False
        with self._lock:
            if self._token == token:
                self._renewed_at = started
        return True

    @contextmanager
    def holding(self, message_ids: Sequence[str]) -> Iterator[str]:
        """Mark these messages as being worked on by this process while inside; gives the
        token their `sending` marks are to record."""
        with self._lock:
            self._held.update(message_ids)
            token = self._token
        # published now, not at the next beat: a worker dying a moment after it took a batch
        # still names it, so the clock gives the batch to another worker at once
        held_key = self._key("held", token)
        try:
            if message_ids:
                pipe = self._client.pipeline(transaction=True)
                pipe.sadd(held_key, *message_ids)
                pipe.pexpire(held_key, self._held_kept_ms)
                pipe.execute()
        except redis.RedisError as error:
            log.warning("worker lease %s: batch published at the next beat: %s", token, error)
        try:
            yield token
        finally:
            with self._lock:
                self._held.subtract(message_ids)
                self._held = +self._held

    def may_hand_over(self, token: str) -> bool:
        """Whether a message marked `sending` under `token` may still go to a provider."""
        with self._lock:
            return (
                token == self._token
                and self._renewed_at is not None
                and time.monotonic() - self._renewed_at < self.ttl / 2
            )

    @property
    def _held_kept_ms(self) -> int:
        return int(self.ttl * HELD_KEPT_FOR_TTLS * 1000)

    def _key(self, kind: str, token: str | None = None) -> str:
        return f"{self._prefix}{kind}" + (f":{token}" if token else "")


@dataclass(frozen=True)
class LeaseView:
    """What Redis says of some leases at one moment."""

    # token -> the ids its live worker is working on
    alive: dict[str, frozenset[str]]
    # tokens gone for at least a ttl: their workers are dead; token -> ids they held
    dead: dict[str, frozenset[str]]

    def holds(self, token: str, message_id: str) -> bool:
        return message_id in self.alive.get(token, frozenset())


class LeaseWatch:
    """The clock's view of the workers' leases. A lease found missing, or a message found
    no longer held by its live worker, counts only once it has been so for a whole ttl
    (see the module's docstring); until then it is only suspected."""

    def __init__(
        self, client: redis.Redis, ttl: float = DEFAULT_TTL_SECONDS, *, prefix: str = PREFIX
    ) -> None:
        self.ttl = ttl
        self._client = client
        self._prefix = prefix
        # what was first seen gone, and when (monotonic): a token, or (token, message id)
        self._suspected: dict[object, float] = {}
        # what was looked at since the last `look`: anything else is no longer in question
        self._looked_at: set[object] = set()

    def look(self, tokens: Iterable[str]) -> LeaseView:
        """The registry's leases and `tokens`; raises redis.RedisError when Redis is away."""
        self._suspected = {k: v for k, v in self._suspected.items() if k in self._looked_at}
        self._looked_at = set()
        registry = f"{self._prefix}registry"
        cutoff = int(time.time() * 1000) - REGISTRY_FORGETS_AFTER_MS
        self._client.zremrangebyscore(registry, "-inf", cutoff)
        registered: list[bytes] = cast(list[bytes], self._client.zrange(registry, 0, -1))
        known = sorted({*tokens, *map(_text, registered)})
        pipe = self._client.pipeline(transaction=False)
        for token in known:
            pipe.exists(f"{self._prefix}alive:{token}")
            pipe.smembers(f"{self._prefix}held:{token}")
        answers = pipe.execute()
        now = time.monotonic()
        alive: dict[str, frozenset[str]] = {}
        dead: dict[str, frozenset[str]] = {}
        for index, token in enumerate(known):
            held = frozenset(map(_text, answers[2 * index + 1]))
            if answers[2 * index]:
                self._suspected.pop(token, None)
                alive[token] = held
            elif self.confirmed(token, now):
                dead[token] = held
        return LeaseView(alive, dead)

    def let_go(self, token: str, message_id: str) -> bool:
        """Whether the live worker of `token` has not held this message for a whole ttl."""
        return self.confirmed((token, message_id), time.monotonic())

    def confirmed(self, what: object, now: float) -> bool:
        self._looked_at.add(what)
        first = self._suspected.setdefault(what, now)
        return now - first >= self.ttl

    def forget(self, token: str) -> None:
        """A dead worker all of whose messages are reconciled."""
        self._suspected.pop(token, None)
        for key in [k for k in self._suspected if isinstance(k, tuple) and k[0] == token]:
            del self._suspected[key]
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(f"{self._prefix}registry", token)
        pipe.delete(f"{self._prefix}held:{token}")
        pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
