"""The long-lived resources one process needs, built once from Settings."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outreach.redis_client import RedisHandle
from outreach.settings import Secret, Settings
from outreach.store.db import make_engine, make_session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: RedisHandle
    closed: bool = field(default=False)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        engine = make_engine(
            settings.database_url.reveal(),
            connect_timeout=settings.database_connect_timeout,
            statement_timeout=settings.database_statement_timeout,
        )
        redis_url = settings.redis_url.reveal() if settings.redis_url else None
        redis = RedisHandle(redis_url, settings.var_dir)
        return cls(settings, engine, make_session_factory(engine), redis)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.engine.dispose()
        self.redis.close()


def stored_secret(var_dir: Path, name: str) -> str | None:
    """The secret `outreach run` keeps in var/<name>, if it made one (for commands run beside
    it in the same directory)."""
    try:
        return (var_dir / name).read_text().strip() or None
    except OSError:
        return None


def generated_secret(var_dir: Path, name: str) -> tuple[Secret, bool]:
    """A secret kept in var/<name> for the embedded defaults; (secret, newly created)."""
    kept = stored_secret(var_dir, name)
    if kept is not None:
        return Secret(kept), False
    path = var_dir / name
    var_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return Secret(value), True
