"""Helpers for tests that run the real `outreach` command as a user would."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

OUTREACH = [sys.executable, "-m", "outreach"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without any outreach/Twilio/SMTP settings of the developer's shell."""
    prefixes = ("OUTREACH_", "TWILIO_", "SMTP_", "EMAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(overrides)
    return env


def run_outreach(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OUTREACH, *args],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until_answering(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"process exited with {process.returncode}:\n{output}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@contextmanager
def running(
    *args: str, cwd: Path, env: Mapping[str, str], port: int, output: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start a long-running outreach process and stop it with SIGINT, as a terminal would;
    what it prints goes to `output` when given (readable while it runs), else to a pipe."""
    with output.open("wb") if output is not None else contextlib.nullcontext() as written:
        process = subprocess.Popen(
            [*OUTREACH, *args],
            cwd=cwd,
            env=dict(env),
            stdout=written if written is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/health", process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()


def claim_redis_database(host: str = "127.0.0.1:6379") -> str:
    """A Redis database no other test or benchmark run on this machine is using.

    Runs flush and fill their database, so two sharing one would wipe each other's broker
    queues, caps and clock lock. The claim is a file lock, released when the process exits.
    """
    for number in range(9, 16):
        lock_path = Path(tempfile.gettempdir()) / f"outreach-test-redis-{number}.lock"
        handle = open(lock_path, "w")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        atexit.register(handle.close)
        return f"redis://{host}/{number}"
    raise RuntimeError("every Redis test database (9-15) is in use by another test run")
