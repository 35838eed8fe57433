"""Sessions of the ops pages, kept in Redis.

Why Redis and not a table: a session is short-lived state whose one rule, "gone after 8 hours
without a request", is exactly a key's time to live, renewed by the read that checks it (one
GETEX). Nothing has to sweep expired rows, no migration is needed, and every web process
already shares the one Redis. Losing Redis (or its data) logs people out, which is the safe
way to fail; nothing else is lost with it.

The cookie holds a random session id; Redis holds it only hashed (`<prefix><sha256 of id>`), so
someone reading Redis cannot take over a session. A session names the ops token it was opened
with by a fingerprint, and is honoured only while a configured token still has that
fingerprint and role: a token removed from OUTREACH_OPS_TOKENS ends its sessions at restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass

import orjson
import redis

from outreach.settings import OpsToken, Settings

IDLE_SECONDS = 8 * 60 * 60
DEFAULT_PREFIX = "outreach:ui:session:"


@dataclass(frozen=True)
class UISession:
    """Who is logged in: the actor the audit log names, their role, and the CSRF token every
    form of theirs carries."""

    actor: str
    role: str
    csrf: str
    token_fingerprint: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf.encode(), given.encode())


def fingerprint(token: OpsToken) -> str:
    return hashlib.sha256(b"ui-session:" + token.token.reveal().encode()).hexdigest()


class SessionStore:
    def __init__(
        self, client: redis.Redis, *, idle_seconds: int = IDLE_SECONDS, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self.redis = client
        self.idle_seconds = idle_seconds
        self.prefix = prefix

    def key(self, session_id: str) -> str:
        return self.prefix + hashlib.sha256(session_id.encode()).hexdigest()

    def open(self, token: OpsToken) -> tuple[str, UISession]:
        """A new session for `token`: its id (for the cookie only) and what it holds."""
        session_id = secrets.token_urlsafe(32)
        session = UISession(token.actor, token.role, secrets.token_urlsafe(32), fingerprint(token))
        self.redis.set(self.key(session_id), orjson.dumps(asdict(session)), ex=self.idle_seconds)
        return session_id, session

    def find(self, session_id: str, settings: Settings) -> UISession | None:
        """The session, its idle time started again; None when it expired, was closed, or its
        token is no longer configured with the same role."""
        if not session_id or len(session_id) > 100:
            return None
        raw = self.redis.getex(self.key(session_id), ex=self.idle_seconds)
        if raw is None:
            return None
        session = UISession(**orjson.loads(raw))
        for token in settings.ops_tokens:
            if token.role == session.role and hmac.compare_digest(
                fingerprint(token), session.token_fingerprint
            ):
                return session
        return None

    def close(self, session_id: str) -> None:
        if session_id:
            self.redis.delete(self.key(session_id))
