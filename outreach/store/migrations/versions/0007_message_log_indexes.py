"""indexes of the message log: one filter, newest first, on a large log; the overview's
messages per quarter hour, kept by triggers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 10:00:00

The ops pages read the log with one filter at a time, newest first, a page after a cursor;
on a log of millions a filter on a column without an index of (that column, id) reads the
log in id order until a page is found, which for a value found only long ago is most of it.
So each filtered column gets one: status (carrying the reason, for the overview's deferred
by reason), channel, stage, purpose and reason (these three replace the indexes of the
column alone, which they serve as well); the few messages flagged for a person a partial
index; and (id, send_at) for the log's since and until: read
backwards, its entries say which messages are in the range without reading them, where the
primary key's would have the log read row by row back to the range. On PostgreSQL the text
search (`q`, a substring of content or ids) reads a trigram index (pg_trgm, a trusted
extension: the database's owner may create it) of `message_search`: each message's searched
columns as one text (`models.SEARCHED_COLUMNS`, a unit separator between them), kept by
triggers in the same transaction (written when a message is inserted, rewritten when an
UPDATE sets one of those columns to something else). A table of its own, because an index on
`messages` itself gets every trigram of a message again at each move of its status (every
one is an update that changes indexed columns): writes cost five to ten times as much.

The overview charts messages per day (in any zone) by channel and status over 30 days, and
the withheld by reason: counted from the log that is half a million index entries on a log
of a million, too slow for a page. On PostgreSQL triggers keep `message_day_counts` instead:
after each statement that inserts, updates or deletes messages, one row per (quarter hour
of `send_at`, channel, status, reason) that changed is appended with the difference,
computed from the statement's transition tables, in the same transaction; rows are only
appended (`folded` false), so concurrent writers never wait on each other for them, and
`store.overview.fold_day_counts` now and then replaces a key's rows by their sum (`folded`
true). A quarter hour, because every zone's midnight falls on one. The counts start from a
GROUP BY of the table as it is, after the triggers exist, in this transaction (creating a
trigger locks out writes until the commit: nothing is missed or counted twice). On SQLite
the table stays empty and the overview counts from the log.

The indexes are built in the migration's transaction: writes to `messages` wait while
they are (on 1,000,000 messages, see BENCHMARKS.md "Pages (issue 19)").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outreach.store.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NEEDS_HUMAN = sa.text("needs_human IS TRUE")
SEARCHED_COLUMNS = ("body", "subject", "text", "recipient", "template", "borrower_id", "loan_id")


def searched(row: str) -> str:
    """The searched text of a message (`row` names it), as this revision writes it."""
    return " || chr(31) || ".join(f"coalesce({row}.{name}, '')" for name in SEARCHED_COLUMNS)


SEARCH_KEPT = f"""
CREATE FUNCTION message_search_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO message_search (message_id, searched)
    SELECT id, {searched("new_rows")} FROM new_rows;
  RETURN NULL;
END
$$;
CREATE FUNCTION message_search_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE message_search SET searched = {searched("NEW")} WHERE message_id = NEW.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER message_search_insert AFTER INSERT ON messages
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION message_search_inserted();
CREATE TRIGGER message_search_update AFTER UPDATE OF {", ".join(SEARCHED_COLUMNS)} ON messages
  FOR EACH ROW WHEN (({searched("OLD")}) IS DISTINCT FROM ({searched("NEW")}))
  EXECUTE FUNCTION message_search_updated();
"""  # noqa: S608 - the names above, never input
# (name, columns); the column alone's index they replace
BY_COLUMN = [
    ("ix_messages_channel_id", ["channel", "id"], "ix_messages_channel"),
    ("ix_messages_stage_id", ["stage", "id"], "ix_messages_stage"),
    ("ix_messages_purpose_id", ["purpose", "id"], None),
    ("ix_messages_reason_id", ["reason", "id"], "ix_messages_reason"),
]


# what the overview counts, and how (the function, triggers and fold name them so): per
# half hour of `send_at` (every zone's midnight but Nepal's and the Chathams' falls on one)
# by channel and status; the withheld per UTC day of `send_at` by status and reason
COUNTED = {
    "message_day_counts": (
        (
            ("bucket", "date_bin('30 minutes', send_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"),
            ("channel", "channel"),
            ("status", "status"),
        ),
        "true",
    ),
    "message_withheld_counts": (
        (("day", "(send_at AT TIME ZONE 'UTC')::date"), ("status", "status"), ("reason", "reason")),
        "status IN ('suppressed', 'cancelled')",
    ),
}


def _counting(table: str, operation: str) -> str:
    """The statement of the statement-level trigger function that appends what a statement
    inserted or deleted (TRUNCATE empties the counts)."""
    key, which = COUNTED[table]
    names = ", ".join(name for name, _ in key)
    exprs = ", ".join(f"{expression} AS {name}" for name, expression in key)
    # names and expressions from COUNTED above, never input
    if operation == "TRUNCATE":
        return f"DELETE FROM {table};"  # noqa: S608
    if operation in ("INSERT", "DELETE"):
        rows, sign = ("new_rows", "") if operation == "INSERT" else ("old_rows", "-")
        return (
            f"INSERT INTO {table} ({names}, n) SELECT {names}, {sign}count(*) FROM "  # noqa: S608
            f"(SELECT {exprs} FROM {rows} WHERE {which}) AS counted GROUP BY {names};"
        )
    raise ValueError(operation)


def _kept() -> str:
    """The statement-level function: a statement's inserted or deleted rows, grouped."""
    branches = []
    for operation in ("TRUNCATE", "INSERT", "DELETE"):
        statements = "\n    ".join(_counting(table, operation) for table in COUNTED)
        branches.append(f"TG_OP = '{operation}' THEN\n    {statements}")
    body = "  IF " + "\n  ELSIF ".join(branches) + "\n  END IF;"
    return (
        "CREATE FUNCTION overview_counts_kept() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\n  RETURN NULL;\nEND\n$$"
    )


# an update moves one message at a time (a trigger for each row whose counted columns it
# changed: no transition tables to build for the many updates that change none of them)
MOVED = """
CREATE FUNCTION overview_counts_moved() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  was_bucket timestamptz := date_bin('30 minutes', OLD.send_at, TIMESTAMPTZ '2000-01-01 00:00+00');
  now_bucket timestamptz := date_bin('30 minutes', NEW.send_at, TIMESTAMPTZ '2000-01-01 00:00+00');
  was_day date := (OLD.send_at AT TIME ZONE 'UTC')::date;
  now_day date := (NEW.send_at AT TIME ZONE 'UTC')::date;
  was_withheld boolean := OLD.status IN ('suppressed', 'cancelled');
  now_withheld boolean := NEW.status IN ('suppressed', 'cancelled');
  same_withheld boolean;
BEGIN
  IF (was_bucket, OLD.channel, OLD.status) IS DISTINCT FROM (now_bucket, NEW.channel, NEW.status)
  THEN
    INSERT INTO message_day_counts (bucket, channel, status, n) VALUES
      (was_bucket, OLD.channel, OLD.status, -1), (now_bucket, NEW.channel, NEW.status, 1);
  END IF;
  same_withheld := was_withheld AND now_withheld
    AND (was_day, OLD.status, OLD.reason) IS NOT DISTINCT FROM (now_day, NEW.status, NEW.reason);
  IF was_withheld AND NOT same_withheld THEN
    INSERT INTO message_withheld_counts (day, status, reason, n)
      VALUES (was_day, OLD.status, OLD.reason, -1);
  END IF;
  IF now_withheld AND NOT same_withheld THEN
    INSERT INTO message_withheld_counts (day, status, reason, n)
      VALUES (now_day, NEW.status, NEW.reason, 1);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER overview_counts_update AFTER UPDATE OF send_at, channel, status, reason
  ON messages FOR EACH ROW
  WHEN (OLD.send_at IS DISTINCT FROM NEW.send_at OR OLD.channel IS DISTINCT FROM NEW.channel
    OR OLD.status IS DISTINCT FROM NEW.status OR OLD.reason IS DISTINCT FROM NEW.reason)
  EXECUTE FUNCTION overview_counts_moved();
"""
REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
    "truncate": "",
}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_index(
        "ix_messages_status_id", "messages", ["status", "id"], postgresql_include=["reason"]
    )
    for name, columns, replaced in BY_COLUMN:
        op.create_index(name, "messages", columns)
        if replaced is not None:
            op.drop_index(replaced, table_name="messages")
    op.create_index(
        "ix_messages_needs_human",
        "messages",
        ["id"],
        postgresql_where=NEEDS_HUMAN,
        sqlite_where=NEEDS_HUMAN,
    )
    op.create_index("ix_messages_id_send_at", "messages", ["id", "send_at"])
    op.create_table(
        "message_day_counts",
        sa.Column("bucket", UTCDateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("folded", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "message_withheld_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("folded", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    for table, (key, _) in COUNTED.items():
        first = key[0][0]
        op.create_index(f"ix_{table}_{first}", table, [first])
        op.create_index(
            f"ix_{table}_fresh",
            table,
            [first],
            postgresql_where=sa.text("NOT folded"),
            sqlite_where=sa.text("NOT folded"),
        )
    if postgresql:
        op.execute(_kept())
        op.execute(MOVED)
        for operation, referencing in REFERENCING.items():
            op.execute(
                f"CREATE TRIGGER overview_counts_{operation} AFTER {operation.upper()} ON "
                f"messages {referencing} FOR EACH STATEMENT EXECUTE FUNCTION "
                "overview_counts_kept()"
            )
        for table, (key, which) in COUNTED.items():
            names = ", ".join(name for name, _ in key)
            exprs = ", ".join(f"{expression} AS {name}" for name, expression in key)
            # the counts as they are, a key's rows together
            op.execute(
                f"INSERT INTO {table} ({names}, n, folded) SELECT {names}, count(*), true "  # noqa: S608
                f"FROM (SELECT {exprs} FROM messages WHERE {which}) AS counted "
                f"GROUP BY {names} ORDER BY {names}"
            )
    op.create_table(
        "message_search",
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("searched", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_search_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_message_search")),
    )
    if postgresql:
        op.execute(SEARCH_KEPT)
        op.execute(
            "INSERT INTO message_search (message_id, searched) "  # noqa: S608
            f"SELECT id, {searched('messages')} FROM messages"
        )
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # built after the rows are in (much faster than row by row); on SQLite an ordinary index
    # of an empty table
    op.create_index(
        "ix_message_search_searched",
        "message_search",
        ["searched"],
        postgresql_using="gin",
        postgresql_ops={"searched": trigram_ops()} if postgresql else {},
    )


def trigram_ops() -> str:
    """pg_trgm's operator class, named with the schema the extension lives in: it may be in
    the database already, installed in a schema not on this connection's search path."""
    bind = op.get_bind()
    schema = bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    ).scalar_one()
    return f"{bind.dialect.identifier_preparer.quote(schema)}.gin_trgm_ops"


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER message_search_update ON messages")
        op.execute("DROP TRIGGER message_search_insert ON messages")
        op.execute("DROP FUNCTION message_search_updated()")
        op.execute("DROP FUNCTION message_search_inserted()")
        # the extension stays: something else in the database may use it
        for operation in (*REFERENCING, "update"):
            op.execute(f"DROP TRIGGER overview_counts_{operation} ON messages")
        op.execute("DROP FUNCTION overview_counts_moved()")
        op.execute("DROP FUNCTION overview_counts_kept()")
    op.drop_index("ix_message_search_searched", table_name="message_search")
    op.drop_table("message_search")
    op.drop_table("message_withheld_counts")
    op.drop_table("message_day_counts")
    op.drop_index("ix_messages_id_send_at", table_name="messages")
    op.drop_index("ix_messages_needs_human", table_name="messages")
    for name, columns, replaced in reversed(BY_COLUMN):
        if replaced is not None:
            op.create_index(replaced, "messages", columns[:1])
        op.drop_index(name, table_name="messages")
    op.drop_index("ix_messages_status_id", table_name="messages")
