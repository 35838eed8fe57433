"""A PostgreSQL that stops answering (issue 21 §5, database outages and the intake's bound):
connections time out instead of hanging, `/ready` and the webhook answer 503 in time, ops
reads answer 503 rather than 500, the intake refuses with Retry-After instead of waiting
forever, and the raw driver's bulk statements fail the way SQLAlchemy's do."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from sqlalchemy import Column, Engine, Integer, MetaData, Table, text
from sqlalchemy.engine import make_url

from outreach.errors import StoreUnavailable
from outreach.runtime import Runtime
from outreach.service.inbox import is_conflict
from outreach.settings import load_settings
from outreach.store.bulk import update_rows
from outreach.store.db import make_engine, make_session_factory, ping, transaction
from tests.conftest import REDIS_URL, REPO_ROOT, truncate_all
from tests.factories import borrower_upserted
from tests.live import LiveService, sign, start_live_service
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def database_proxy(postgres_engine: Engine) -> Iterator[TcpProxy]:
    url = postgres_engine.url
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


def proxied_url(postgres_engine: Engine, proxy: TcpProxy) -> str:
    url = make_url(postgres_engine.url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def live(
    postgres_engine: Engine, redis_client: redis.Redis, database_proxy: TcpProxy
) -> Iterator[LiveService]:
    """The live service, reaching the test's database through a proxy the test can cut or
    blackhole (no worker: nothing here is sent)."""
    truncate_all(postgres_engine)
    for service in start_live_service(
        proxied_url(postgres_engine, database_proxy), REDIS_URL, run_worker=False
    ):
        try:
            yield service
        finally:
            # nothing of the service stays stuck on a blackholed connection while it stops
            database_proxy.restore()
    truncate_all(postgres_engine)


def post_raw(live: LiveService, path: str, body: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        live.base_url + path,
        content=body,
        headers={"Content-Type": "application/json", "X-Outreach-Signature": sign(body)},
        timeout=timeout,
    )


def timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    assert callable(call)
    response = call()
    return response, time.monotonic() - started


def test_a_blackholed_database_answers_503_in_time_and_loses_no_accepted_event(
    live: LiveService, database_proxy: TcpProxy
) -> None:
    import json

    assert live.post_event(borrower_upserted("b-before")).status_code == 202
    database_proxy.blackhole()

    ready, waited = timed(lambda: live.client.get("/ready"))
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["database"].startswith("unreachable: ")
    assert waited < 10, f"/ready took {waited:.1f} s"

    during = borrower_upserted("b-during")
    body = json.dumps(during).encode()
    answer, waited = timed(lambda: post_raw(live, "/v1/events", body))
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()
    assert waited < 30, f"the webhook took {waited:.1f} s"
    # and so is the next sender, of one event or of a batch
    again, waited = timed(lambda: post_raw(live, "/v1/events", body))
    assert again.status_code == 503 and waited < 15
    batch = json.dumps({"events": [borrower_upserted("b-batch")]}).encode()
    refused, waited = timed(lambda: post_raw(live, "/v1/events/batch", batch))
    assert refused.status_code == 503 and waited < 15
    assert refused.headers["Retry-After"].isdigit()
    ready, waited = timed(lambda: live.client.get("/ready"))
    assert ready.status_code == 503 and waited < 10

    database_proxy.restore()

    # sent again as the loan system does until it is answered: stored once, applied
    def accepted() -> httpx.Response | None:
        response = post_raw(live, "/v1/events", body)
        return response if response.status_code in (200, 202) else None

    live.wait_for(accepted, timeout=60, interval=0.5)
    assert live.wait_applied([during["id"]], timeout=30) == {during["id"]: "applied"}
    assert live.client.get("/ready").status_code == 200


def test_ops_reads_answer_503_in_the_error_shape_while_the_database_is_down(
    live: LiveService, database_proxy: TcpProxy
) -> None:
    assert live.get("/v1/messages").status_code == 200
    database_proxy.cut()
    for path in ("/v1/messages", "/v1/borrowers/b-1/timeline", "/v1/campaigns", "/v1/audit"):
        answer = live.get(path)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert answer.json() == {"detail": "the database is unavailable; retry later"}
        assert answer.headers["Retry-After"].isdigit()
    database_proxy.restore()
    assert live.wait_for(lambda: live.get("/v1/messages").status_code == 200, timeout=30)


def test_a_full_backlog_answers_503_with_retry_after_instead_of_waiting_forever(
    live: LiveService,
) -> None:
    import json

    intake = live.app.state.intake
    intake.max_backlog, intake.wait_seconds = 0, 1.0  # every accepted event is one too many
    event = borrower_upserted("b-full")
    body = json.dumps(event).encode()
    answer, waited = timed(lambda: post_raw(live, "/v1/events", body, timeout=20))
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()
    assert waited < 10
    batch = json.dumps({"events": [borrower_upserted("b-full-batch")]}).encode()
    assert post_raw(live, "/v1/events/batch", batch, timeout=20).status_code == 503
    assert live.outcomes([event["id"]]) == {}  # refused, so not stored: the sender sends it again

    intake.max_backlog = 4096
    assert post_raw(live, "/v1/events", body).status_code == 202
    assert live.wait_applied([event["id"]]) == {event["id"]: "applied"}


def test_connections_and_statements_are_bounded(
    postgres_engine: Engine, database_proxy: TcpProxy, redis_client: redis.Redis
) -> None:
    settings = load_settings(
        {
            "OUTREACH_DATABASE_URL": proxied_url(postgres_engine, database_proxy),
            "OUTREACH_REDIS_URL": REDIS_URL,
            "OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml"),
            "OUTREACH_DATABASE_CONNECT_TIMEOUT": "2",
            "OUTREACH_DATABASE_STATEMENT_TIMEOUT": "1.5",
        }
    )
    runtime = Runtime.start(settings)
    try:
        with runtime.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "1500ms"
            with pytest.raises(Exception, match="statement timeout"):
                connection.execute(text("SELECT pg_sleep(5)"))
        runtime.engine.dispose()
        database_proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(Exception, match="timeout"):
            ping(runtime.engine)
        assert time.monotonic() - started < 10
    finally:
        runtime.close()


def test_a_deadlock_in_a_bulk_statement_is_a_conflict_the_inbox_retries(
    postgres_engine: Engine,
) -> None:
    table = Table(
        "bulk_deadlock_probe",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("n", Integer),
    )
    table.create(postgres_engine)
    engine = make_engine(postgres_engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            connection.execute(table.insert(), [{"id": 1, "n": 0}, {"id": 2, "n": 0}])
        sessions = make_session_factory(engine)
        both_locked = threading.Barrier(2, timeout=10)
        errors: list[BaseException] = []

        def cross(first: int, second: int) -> None:
            try:
                with transaction(sessions) as session:
                    session.execute(text(f"UPDATE {table.name} SET n = 1 WHERE id = {first}"))
                    both_locked.wait()
                    # the raw psycopg path (more than one row: an unnest of arrays)
                    update_rows(session, table, "id", [{"id": second, "n": 2}, {"id": 9, "n": 2}])
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=cross, args=pair) for pair in ((1, 2), (2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(errors) == 1, errors
        assert isinstance(errors[0], StoreUnavailable), repr(errors[0])
        assert is_conflict(errors[0])
    finally:
        engine.dispose()
        table.drop(postgres_engine)
