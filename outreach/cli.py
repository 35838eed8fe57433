"""The `outreach` command."""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from outreach.errors import ConfigurationError, OutreachError
from outreach.settings import OpsToken, Settings, load_settings

if TYPE_CHECKING:
    from outreach.runtime import Runtime
    from outreach.wiring import Services

app = typer.Typer(
    help="Lawful, humane SMS and email outreach for a lender's collections team.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
messages_app = typer.Typer(help="The message log (ops API from a terminal).", no_args_is_help=True)
app.add_typer(db_app, name="db")
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


def start_services(settings: Settings) -> tuple[Runtime, Services]:
    """Runtime and services, or one line naming what is wrong (policy, templates, settings)."""
    from outreach.runtime import Runtime
    from outreach.wiring import Services

    with errors_as_one_line():
        runtime = Runtime.start(settings)
    try:
        with errors_as_one_line():
            services = Services.build(runtime)
    except BaseException:
        runtime.close()
        raise
    return runtime, services


@app.command()
def run(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """API, worker and clock in one process on the embedded defaults."""
    import uvicorn

    from outreach.api.app import create_app
    from outreach.clock import Clock
    from outreach.store.migrate import upgrade
    from outreach.worker import build_broker, enqueue, start_worker, stop_worker

    configure_logging()
    settings = with_generated_defaults(settings_or_exit())
    runtime, services = start_services(settings)
    broker = None
    worker_process = None
    clock_process = None
    try:
        upgrade(runtime.engine)
        broker = build_broker(runtime.redis.url)
        worker_process = start_worker(broker, services, threads=4)
        ready_broker = broker
        clock_process = Clock(services, lambda ids: enqueue(ready_broker, ids))
        clock_process.start()
        typer.echo(f"outreach listening on http://{host}:{port}")
        uvicorn.run(create_app(services, broker), host=host, port=port, log_level="info")
    finally:
        if clock_process is not None:
            clock_process.stop()
        if worker_process is not None:
            stop_worker(worker_process, services, 10_000)
        if broker is not None:
            broker.close()
        runtime.close()


@app.command()
def web(host: HostOption = "0.0.0.0", port: PortOption = 8000) -> None:
    """The HTTP API and pages (Procfile `web`)."""
    import uvicorn

    from outreach.api.app import create_app

    configure_logging()
    runtime, services = start_services(settings_or_exit())
    try:
        uvicorn.run(create_app(services), host=host, port=port, log_level="info")
    finally:
        runtime.close()


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Threads per process.")] = 8,
) -> None:
    """Send due messages (Procfile `worker`, dramatiq)."""
    from outreach.worker import run_workers

    configure_logging()
    settings = settings_or_exit()
    if settings.uses_embedded_redis:
        fail("OUTREACH_REDIS_URL: required for a separate worker (use `outreach run` otherwise)")
    runtime, _ = start_services(settings)
    runtime.close()
    run_workers(processes, threads)


@app.command()
def clock() -> None:
    """Release due messages and re-evaluate cadences (Procfile `clock`; one leader)."""
    import signal
    import threading

    from outreach.clock import Clock
    from outreach.worker import build_broker, enqueue

    configure_logging()
    settings = settings_or_exit()
    if settings.uses_embedded_redis:
        fail("OUTREACH_REDIS_URL: required for a separate clock (use `outreach run` otherwise)")
    runtime, services = start_services(settings)
    broker = build_broker(runtime.redis.url)
    scheduler = Clock(services, lambda ids: enqueue(broker, ids))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler.start()
    try:
        stop.wait()
    finally:
        scheduler.stop()
        broker.close()
        runtime.close()


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
def check(
    policy: Annotated[
        Path | None, typer.Option(help="Policy file (default: OUTREACH_POLICY).")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option(help="Templates directory (default: templates/).")
    ] = None,
) -> None:
    """Validate schedules/ and templates/; exit 1 with findings."""
    from outreach.policy import PolicyError, load_policy
    from outreach.render.lint import check_repository, has_errors

    settings = settings_or_exit()
    policy_path = policy or settings.policy_path
    templates_dir = templates or settings.templates_dir
    try:
        loaded = load_policy(policy_path)
    except PolicyError as error:
        typer.echo(f"error: {error}")
        raise typer.Exit(1) from None
    findings = check_repository(
        templates_dir, loaded.templates_referenced(), loaded.locales, loaded.max_sms_segments
    )
    for finding in findings:
        typer.echo(str(finding))
    errors = sum(1 for finding in findings if finding.severity == "error")
    warnings = len(findings) - errors
    summary = f"{policy_path}, {templates_dir}: {errors} errors, {warnings} warnings"
    if has_errors(findings):
        typer.echo(summary)
        raise typer.Exit(1)
    typer.echo(f"{summary}: ok")


FilterOption = Annotated[str | None, typer.Option()]


def _criteria(**values: str | None) -> dict[str, str | None]:
    return {key: value for key, value in values.items() if value is not None}


@contextmanager
def _log_session() -> Iterator[Any]:
    from outreach.store.db import make_engine, make_session_factory

    settings = settings_or_exit()
    engine = make_engine(settings.database_url.reveal())
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


@messages_app.command("list")
def messages_list(
    borrower_id: FilterOption = None,
    loan_id: FilterOption = None,
    campaign_id: FilterOption = None,
    status: FilterOption = None,
    channel: FilterOption = None,
    stage: FilterOption = None,
    reason: FilterOption = None,
    since: FilterOption = None,
    until: FilterOption = None,
    q: FilterOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: FilterOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document per line.")] = False,
) -> None:
    """List messages with the filters of GET /v1/messages, newest first."""
    import json

    from outreach.service.log import MessageFilter, MessageFilterError, list_messages

    try:
        criteria = MessageFilter.parse(
            _criteria(
                borrower_id=borrower_id,
                loan_id=loan_id,
                campaign_id=campaign_id,
                status=status,
                channel=channel,
                stage=stage,
                reason=reason,
                since=since,
                until=until,
                q=q,
            )
        )
        with _log_session() as session:
            items, next_cursor = list_messages(session, criteria, limit=limit, cursor=cursor)
    except MessageFilterError as error:
        fail(str(error))
    for item in items:
        if as_json:
            typer.echo(json.dumps(item, ensure_ascii=False))
        else:
            typer.echo(
                f"{item['id']}  {item['send_at']}  {item['status']:<11} {item['reason'] or '-':<20}"
                f" {item['channel']:<5} {item['purpose']:<20} {item['template']}"
                f"  borrower={item['borrower_id']} loan={item['loan_id']}"
            )
    if next_cursor:
        typer.echo(f"next page: --cursor {next_cursor}", err=True)


@messages_app.command("show")
def messages_show(message_id: str) -> None:
    """One message with its timeline (JSON)."""
    import json

    from outreach.service.log import get_message

    with _log_session() as session:
        found = get_message(session, message_id)
    if found is None:
        fail(f"no message {message_id}", code=1)
    typer.echo(json.dumps(found, ensure_ascii=False, indent=2))


@messages_app.command("export")
def messages_export(
    borrower_id: FilterOption = None,
    loan_id: FilterOption = None,
    campaign_id: FilterOption = None,
    status: FilterOption = None,
    channel: FilterOption = None,
    stage: FilterOption = None,
    reason: FilterOption = None,
    since: FilterOption = None,
    until: FilterOption = None,
    q: FilterOption = None,
    out: Annotated[str, typer.Option(help="File to write; - for standard output.")] = "-",
) -> None:
    """Export the filtered message log as CSV."""
    from outreach.service.export import csv_rows
    from outreach.service.log import MessageFilter, MessageFilterError
    from outreach.store.db import make_engine, make_session_factory

    try:
        criteria = MessageFilter.parse(
            _criteria(
                borrower_id=borrower_id,
                loan_id=loan_id,
                campaign_id=campaign_id,
                status=status,
                channel=channel,
                stage=stage,
                reason=reason,
                since=since,
                until=until,
                q=q,
            )
        )
    except MessageFilterError as error:
        fail(str(error))
    settings = settings_or_exit()
    engine = make_engine(settings.database_url.reveal())
    try:
        stream = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            for chunk in csv_rows(make_session_factory(engine), criteria):
                stream.write(chunk)
        finally:
            if stream is not sys.stdout:
                stream.close()
    finally:
        engine.dispose()


def _instant(value: str) -> datetime.datetime:
    """--start: an RFC 3339 date-time with its offset, or a date (midnight UTC)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            return datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"'{value}' is not an RFC 3339 date-time (e.g. 2026-03-02T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"'{value}' needs a UTC offset, e.g. 2026-03-02T00:00:00Z")
    return moment.astimezone(datetime.UTC)


@app.command()
def simulate(
    events: Annotated[
        Path, typer.Option("--events", help="EVENTS.jsonl: one webhook event per line.")
    ],
    start: Annotated[
        datetime.datetime,
        typer.Option(
            "--start", parser=_instant, metavar="T0", help="Virtual start, RFC 3339 (UTC offset)."
        ),
    ],
    days: Annotated[float, typer.Option("--days", min=0.0, help="How many days to simulate.")],
    out: Annotated[Path, typer.Option("--out", help="MESSAGES.jsonl to write.")],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy file (default: OUTREACH_POLICY).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Same seed and input, same message ids.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            min=1,
            help="Processes to split a large book between (default: one per CPU); "
            "the output is the same.",
        ),
    ] = None,
) -> None:
    """Run the real pipeline on a virtual clock over EVENTS.jsonl."""
    from outreach.sim.shards import simulate_file

    settings = settings_or_exit()
    with errors_as_one_line():
        result = simulate_file(
            settings,
            events,
            start=start,
            days=days,
            out=out,
            policy_path=policy,
            seed=seed,
            progress=sys.stderr.isatty(),
            jobs=jobs,
        )
    # imported now: it loads the simulator, which a split run's first process does not need
    from outreach.sim.report import summary_line

    typer.echo(summary_line(result.stats, out))


@app.command()
def demo(
    borrowers: Annotated[
        int, typer.Option("--borrowers", min=20, help="How many borrowers to generate.")
    ] = 300,
    days: Annotated[int, typer.Option("--days", min=1, help="How many days to simulate.")] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated book.")] = 7,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy file (default: OUTREACH_POLICY).")
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep", help="Directory to keep EVENTS.jsonl and MESSAGES.jsonl in (default: none)."
        ),
    ] = None,
) -> None:
    """A generated loan book through `simulate`, with a readable report."""
    from outreach.sim.demo import run_demo

    settings = settings_or_exit()
    with errors_as_one_line():
        report, passed = run_demo(
            settings,
            borrowers=borrowers,
            days=days,
            seed=seed,
            policy_path=policy,
            keep=keep,
            progress=sys.stderr.isatty(),
        )
    typer.echo(report)
    if not passed:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
