"""The `outreach` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated, NoReturn

import typer

from outreach.errors import ConfigurationError, OutreachError
from outreach.settings import OpsToken, Settings, load_settings

app = typer.Typer(
    help="Lawful, humane SMS and email outreach for a lender's collections team.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
campaign_app = typer.Typer(
    help="Marketing-style campaigns (ops API from a terminal).", no_args_is_help=True
)
messages_app = typer.Typer(help="The message log (ops API from a terminal).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(campaign_app, name="campaign")
app.add_typer(messages_app, name="messages")

HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(help="TCP port to listen on.")]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"outreach: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as error:
        fail(f"configuration error: {error}")


@contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Known failures end the command with one line and a non-zero exit, not a traceback."""
    try:
        yield
    except ConfigurationError as error:
        fail(f"configuration error: {error}")
    except OutreachError as error:
        fail(str(error), code=1)


def not_yet(capability: str, issue: int) -> NoReturn:
    fail(f"{capability} is not available yet: it lands with issue {issue}.", code=2)


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def with_generated_defaults(settings: Settings) -> Settings:
    """Embedded defaults: a webhook secret and an admin token kept under var/ and printed."""
    from outreach.runtime import generated_secret

    if settings.webhook_secret is None:
        secret, _ = generated_secret(settings.var_dir, "webhook_secret")
        typer.echo(f"Webhook secret (OUTREACH_WEBHOOK_SECRET): {secret.reveal()}")
        settings = replace(settings, webhook_secret=secret)
    if not settings.ops_tokens:
        token, _ = generated_secret(settings.var_dir, "admin_token")
        typer.echo(f"Admin token (Authorization: Bearer ...): {token.reveal()}")
        settings = replace(settings, ops_tokens=(OpsToken(token, "admin"),))
    return settings


@app.command()
def run(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """API, worker and clock in one process on the embedded defaults."""
    import uvicorn

    from outreach.api.app import create_app
    from outreach.runtime import Runtime
    from outreach.store.migrate import upgrade

    configure_logging()
    settings = with_generated_defaults(settings_or_exit())
    with errors_as_one_line():
        runtime = Runtime.start(settings)
    try:
        upgrade(runtime.engine)
        typer.echo(f"outreach listening on http://{host}:{port}")
        uvicorn.run(create_app(runtime), host=host, port=port, log_level="info")
    finally:
        runtime.close()


@app.command()
def web(host: HostOption = "0.0.0.0", port: PortOption = 8000) -> None:
    """The HTTP API and pages (Procfile `web`)."""
    import uvicorn

    from outreach.api.app import create_app
    from outreach.runtime import Runtime

    configure_logging()
    settings = settings_or_exit()
    with errors_as_one_line():
        runtime = Runtime.start(settings)
    try:
        uvicorn.run(create_app(runtime), host=host, port=port, log_level="info")
    finally:
        runtime.close()


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Threads per process.")] = 8,
) -> None:
    """Send due messages (Procfile `worker`, dramatiq)."""
    settings_or_exit()
    not_yet("the worker", 5)


@app.command()
def clock() -> None:
    """Release due messages and re-evaluate cadences (Procfile `clock`; one leader)."""
    settings_or_exit()
    not_yet("the clock", 5)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations (Procfile `release`)."""
    from outreach.store.db import make_engine
    from outreach.store.migrate import upgrade

    settings = settings_or_exit()
    engine = make_engine(settings.database_url.reveal())
    try:
        upgrade(engine, revision)
    except Exception as error:
        fail(f"migration failed: {type(error).__name__}: {error}".splitlines()[0], code=1)
    finally:
        engine.dispose()
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision.")]) -> None:
    """Undo migrations down to a revision (`base` removes every table)."""
    from outreach.store.db import make_engine
    from outreach.store.migrate import downgrade

    settings = settings_or_exit()
    engine = make_engine(settings.database_url.reveal())
    try:
        downgrade(engine, revision)
    finally:
        engine.dispose()
    typer.echo(f"database at {revision}")


@app.command()
def check() -> None:
    """Validate schedules/ and templates/; exit 1 with findings."""
    settings_or_exit()
    not_yet("outreach check", 4)


def _campaign_command(action: str, summary: str) -> None:
    def command() -> None:
        not_yet(f"campaign {action}", 8)

    command.__doc__ = summary
    campaign_app.command(action)(command)


for _action, _summary in (
    ("create", "Create a campaign from a segment, a template and a window."),
    ("preview", "Show who a campaign targets and what it would send; changes nothing."),
    ("launch", "Start sending a campaign."),
    ("pause", "Pause a running campaign."),
    ("resume", "Resume a paused campaign."),
    ("cancel", "Cancel a campaign and its pending messages."),
    ("list", "List campaigns with their progress."),
):
    _campaign_command(_action, _summary)


@messages_app.command("list")
def messages_list() -> None:
    """List messages with filters."""
    not_yet("the message log from the terminal", 5)


@messages_app.command("show")
def messages_show(message_id: str) -> None:
    """One message with its timeline."""
    not_yet("the message log from the terminal", 5)


@messages_app.command("export")
def messages_export() -> None:
    """Export messages as CSV."""
    not_yet("the message log from the terminal", 5)


@app.command()
def simulate() -> None:
    """Run the real pipeline on a virtual clock over EVENTS.jsonl."""
    not_yet("the simulator", 7)


@app.command()
def demo() -> None:
    """A generated loan book through `simulate`, with a readable report."""
    not_yet("the demo", 7)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
