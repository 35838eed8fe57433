"""What `GET /metrics` costs the database on a large log (issue 21 §2): the GROUP BY it would
need, against the trigger-kept counts of migration 0008, and what the triggers cost a write.

    .venv/bin/python bench/bench_metrics.py [--messages 3000000] [--keep]

1. creates a database of its own on 127.0.0.1:5432 (`outreach_bench_metrics_<random>`, dropped
   at the end unless `--keep`), migrated to 0007 (before the counts);
2. fills `messages` with `--messages` rows shaped like a log (60 % SMS with a 180-character
   text, 40 % email with a 640-character text and a 1,600-character HTML part; mostly
   delivered, sent and suppressed, a few percent scheduled, deferred, queued, sending), with
   the indexes of the log built afterwards, then VACUUM ANALYZE;
3. times `SELECT status, channel, count(*) … GROUP BY` three times;
4. upgrades to head, timing migration 0008 (its triggers, and the counts taken from the table);
5. times the reads `/metrics` makes (`store/counts.py`: messages, events, due) and a fold,
   checking the counts against the GROUP BY;
6. reads the triggers' own time from EXPLAIN ANALYZE of UPDATEs of 1, 20 and 500 rows that
   change the status, of 500 that change nothing counted, and of an INSERT of 10,000 rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outreach.store import counts  # noqa: E402
from outreach.store.db import make_engine, make_session_factory, transaction  # noqa: E402
from outreach.store.migrate import upgrade  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"

FILL = """
INSERT INTO messages (id, idempotency_key, purpose, borrower_id, loan_id, stage, channel,
  template, locale, recipient, body, subject, text, html, segments, send_at, status, reason,
  refs, provider_id, sent_at, attempts, needs_human, created_at, updated_at)
SELECT 'm' || lpad(g::text, 12, '0'), 'k' || g, 'dunning', 'b' || (g %% 400000),
  'l' || (g %% 500000), 'early', CASE WHEN g %% 10 < 6 THEN 'sms' ELSE 'email' END, 'reminder',
  'en-US',
  CASE WHEN g %% 10 < 6 THEN '+1555' || lpad((g %% 10000000)::text, 7, '0')
       ELSE 'b' || g || '@example.com' END,
  CASE WHEN g %% 10 < 6 THEN repeat('Your payment of USD 123.45 on ****1234 is overdue. ', 3) END,
  CASE WHEN g %% 10 >= 6 THEN 'Payment reminder' END,
  CASE WHEN g %% 10 >= 6 THEN repeat('Dear borrower, your payment is overdue; please call. ', 12)
  END,
  CASE WHEN g %% 10 >= 6 THEN repeat('<p>Dear borrower, your payment is overdue.</p> ', 34) END,
  1, now() - ((g %% 86400) || ' minutes')::interval,
  CASE WHEN r < 0.55 THEN 'delivered' WHEN r < 0.65 THEN 'sent' WHEN r < 0.85 THEN 'suppressed'
       WHEN r < 0.88 THEN 'failed' WHEN r < 0.90 THEN 'undelivered' WHEN r < 0.95 THEN 'cancelled'
       WHEN r < 0.98 THEN 'scheduled' WHEN r < 0.995 THEN 'deferred' WHEN r < 0.998 THEN 'queued'
       ELSE 'sending' END,
  'accepted', '{}'::jsonb, 'SM' || g, now(), 1, false,
  now() - ((g %% 86400) || ' minutes')::interval, now()
FROM (SELECT g, random() AS r FROM generate_series(1, %(n)s) g) s
"""
GROUP_BY = "SELECT status, channel, count(*) FROM messages GROUP BY status, channel"
UPDATES = {
    "UPDATE of 1 row, status changed": (
        "UPDATE messages SET status = 'sent' WHERE id IN "
        "(SELECT id FROM messages WHERE status = 'delivered' LIMIT 1)"
    ),
    "UPDATE of 20 rows, status changed": (
        "UPDATE messages SET status = 'sent' WHERE id IN "
        "(SELECT id FROM messages WHERE status = 'delivered' LIMIT 20)"
    ),
    "UPDATE of 500 rows, status changed": (
        "UPDATE messages SET status = 'sent' WHERE id IN "
        "(SELECT id FROM messages WHERE status = 'delivered' LIMIT 500)"
    ),
    "UPDATE of 500 rows, nothing counted changed": (
        "UPDATE messages SET updated_at = now() WHERE id IN "
        "(SELECT id FROM messages WHERE status = 'delivered' LIMIT 500)"
    ),
    "INSERT of 10,000 rows": (
        "INSERT INTO messages SELECT 'x' || id, 'x' || idempotency_key, purpose, borrower_id, "
        "loan_id, campaign_id, stage, channel, template, template_version, locale, recipient, "
        "body, subject, text, html, segments, encoding, send_at, status, reason, fallback_from, "
        "refs, provider_id, cap_reserved_at, sent_at, attempts, needs_human, created_at, "
        "updated_at, worker_lease, variant FROM messages LIMIT 10000"
    ),
}


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3_000_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    name = f"outreach_bench_metrics_{secrets.token_hex(4)}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    try:
        upgrade(engine, "0007")
        with psycopg.connect(f"{SERVER}/{name}", autocommit=True) as connection:
            indexes = [
                row[0]
                for row in connection.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'messages' "
                    "AND indexname NOT IN ('pk_messages', 'uq_messages_idempotency_key')"
                )
            ]
            for definition in indexes:
                found = re.search(r"INDEX (\w+) ON", definition)
                assert found is not None
                connection.execute(f"DROP INDEX {found.group(1)}")
            fill = timed(lambda: connection.execute(FILL, {"n": args.messages}))
            for definition in indexes:
                connection.execute(definition)
            connection.execute("VACUUM ANALYZE messages")
            print(f"{args.messages:,} messages written in {fill:.0f} s")
            grouped = [timed(lambda: connection.execute(GROUP_BY).fetchall()) for _ in range(3)]
            print(f"GROUP BY status, channel: {', '.join(f'{t * 1000:.0f}' for t in grouped)} ms")
        migration = timed(lambda: upgrade(engine))
        print(f"migration 0008 (triggers, counts from the table): {migration:.1f} s")
        sessions = make_session_factory(engine)
        now = dt.datetime.now(dt.UTC)
        with sessions() as session:
            reads = []
            for _ in range(5):
                reads.append(
                    timed(
                        lambda: (
                            counts.message_counts(session),
                            counts.event_counts(session),
                        )
                    )
                )
            due = timed(lambda: counts.messages_due(session, now))
            kept = counts.message_counts(session)
        with psycopg.connect(f"{SERVER}/{name}") as connection:
            expected = {(s, c): n for s, c, n in connection.execute(GROUP_BY)}
        assert {k: v for k, v in kept.items() if v} == expected, "counts differ from GROUP BY"
        print(f"counts read (messages and events): median {statistics.median(reads) * 1000:.1f} ms")
        print(f"due count: {due * 1000:.1f} ms")
        with psycopg.connect(f"{SERVER}/{name}") as connection:
            for label, statement in UPDATES.items():
                plan = "\n".join(
                    row[0] for row in connection.execute(f"EXPLAIN (ANALYZE) {statement}")
                )
                trigger = sum(map(float, re.findall(r"Trigger \w+: time=([\d.]+)", plan)))
                total = float(re.findall(r"Execution Time: ([\d.]+)", plan)[0])
                print(f"{label}: triggers {trigger:.2f} ms of {total:.1f} ms")
            connection.rollback()
        with transaction(sessions) as session:
            fold = timed(lambda: counts.fold(session))
        print(f"fold: {fold * 1000:.1f} ms")
    finally:
        engine.dispose()
        if not args.keep:
            with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
