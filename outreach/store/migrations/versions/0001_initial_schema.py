"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:05:46.060408
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import outreach.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "borrowers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=20), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("address_country", sa.String(length=2), nullable=True),
        sa.Column("address_region", sa.String(length=100), nullable=True),
        sa.Column("address_city", sa.String(length=100), nullable=True),
        sa.Column("address_postal_code", sa.String(length=20), nullable=True),
        sa.Column("consent_sms", sa.Boolean(), nullable=False),
        sa.Column("consent_email", sa.Boolean(), nullable=False),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state_as_of", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_borrowers")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column(
            "segment",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "variants",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("start_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("throttle_per_minute", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaigns_status"), ["status"], unique=False)

    op.create_table(
        "contact_restrictions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("borrower_id", sa.String(length=100), nullable=False),
        sa.Column("restriction", sa.String(length=40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "windows",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("state_as_of", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_restrictions")),
        sa.UniqueConstraint(
            "borrower_id", "restriction", name=op.f("uq_contact_restrictions_borrower_id")
        ),
    )
    with op.batch_alter_table("contact_restrictions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_restrictions_borrower_id"), ["borrower_id"], unique=False
        )

    op.create_table(
        "field_visits",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("loan_id", sa.String(length=100), nullable=False),
        sa.Column("visit_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("collector_name", sa.String(length=200), nullable=False),
        sa.Column("collector_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_field_visits")),
    )
    with op.batch_alter_table("field_visits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_field_visits_loan_id"), ["loan_id"], unique=False)

    op.create_table(
        "inbound_replies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("borrower_id", sa.String(length=100), nullable=True),
        sa.Column("classification", sa.String(length=20), nullable=False),
        sa.Column("needs_human", sa.Boolean(), nullable=False),
        sa.Column("received_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_replies")),
        sa.UniqueConstraint("provider_id", name=op.f("uq_inbound_replies_provider_id")),
    )
    with op.batch_alter_table("inbound_replies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_replies_borrower_id"), ["borrower_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_replies_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_inbound_replies_sender"), ["sender"], unique=False)

    op.create_table(
        "invalid_recipients",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invalid_recipients")),
        sa.UniqueConstraint("channel", "recipient", name=op.f("uq_invalid_recipients_channel")),
    )
    op.create_table(
        "loans",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("borrower_id", sa.String(length=100), nullable=False),
        sa.Column("product", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_due", outreach.store.types.Amount(precision=18, scale=4), nullable=False),
        sa.Column("balance", outreach.store.types.Amount(precision=18, scale=4), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.Column("closed_reason", sa.String(length=20), nullable=True),
        sa.Column("state_as_of", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loans")),
    )
    with op.batch_alter_table("loans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_loans_borrower_id"), ["borrower_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=300), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("borrower_id", sa.String(length=100), nullable=False),
        sa.Column("loan_id", sa.String(length=100), nullable=True),
        sa.Column("campaign_id", sa.String(length=40), nullable=True),
        sa.Column("stage", sa.String(length=40), nullable=True),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("template_version", sa.String(length=40), nullable=True),
        sa.Column("locale", sa.String(length=20), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("encoding", sa.String(length=10), nullable=True),
        sa.Column("send_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("fallback_from", sa.String(length=10), nullable=True),
        sa.Column(
            "refs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.Column(
            "cap_reserved_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("sent_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("needs_human", sa.Boolean(), nullable=False),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_messages_idempotency_key")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_borrower_created", ["borrower_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_channel"), ["channel"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_messages_loan_status", ["loan_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_provider_id"), ["provider_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_reason"), ["reason"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_sent_at"), ["sent_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_stage"), ["stage"], unique=False)
        batch_op.create_index("ix_messages_status_send_at", ["status", "send_at"], unique=False)

    op.create_table(
        "opt_outs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("borrower_id", sa.String(length=100), nullable=True),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opt_outs")),
        sa.UniqueConstraint("channel", "recipient", name=op.f("uq_opt_outs_channel")),
    )
    with op.batch_alter_table("opt_outs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_opt_outs_borrower_id"), ["borrower_id"], unique=False)

    op.create_table(
        "payment_plans",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("loan_id", sa.String(length=100), nullable=False),
        sa.Column(
            "instalments",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_plans")),
    )
    with op.batch_alter_table("payment_plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_plans_loan_id"), ["loan_id"], unique=False)

    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("loan_id", sa.String(length=100), nullable=False),
        sa.Column("amount", outreach.store.types.Amount(precision=18, scale=4), nullable=False),
        sa.Column("paid_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "amount_due_after", outreach.store.types.Amount(precision=18, scale=4), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payments_loan_id"), ["loan_id"], unique=False)

    op.create_table(
        "promises",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("loan_id", sa.String(length=100), nullable=False),
        sa.Column("amount", outreach.store.types.Amount(precision=18, scale=4), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=False),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promises")),
    )
    with op.batch_alter_table("promises", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_promises_loan_id"), ["loan_id"], unique=False)

    op.create_table(
        "provider_callbacks",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("received_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_callbacks")),
    )
    op.create_table(
        "received_events",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("occurred_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("borrower_id", sa.String(length=100), nullable=True),
        sa.Column("loan_id", sa.String(length=100), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_received_events")),
    )
    with op.batch_alter_table("received_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_received_events_borrower_id"), ["borrower_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_received_events_loan_id"), ["loan_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_received_events_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_received_events_type"), ["type"], unique=False)

    op.create_table(
        "borrower_phones",
        sa.Column("borrower_id", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["borrower_id"],
            ["borrowers.id"],
            name=op.f("fk_borrower_phones_borrower_id_borrowers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("borrower_id", "position", name=op.f("pk_borrower_phones")),
    )
    with op.batch_alter_table("borrower_phones", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_borrower_phones_phone"), ["phone"], unique=False)

    op.create_table(
        "message_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_events")),
    )
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_message_events_message_id"), ["message_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_events_message_id"))

    op.drop_table("message_events")
    with op.batch_alter_table("borrower_phones", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_borrower_phones_phone"))

    op.drop_table("borrower_phones")
    with op.batch_alter_table("received_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_received_events_type"))
        batch_op.drop_index(batch_op.f("ix_received_events_received_at"))
        batch_op.drop_index(batch_op.f("ix_received_events_loan_id"))
        batch_op.drop_index(batch_op.f("ix_received_events_borrower_id"))

    op.drop_table("received_events")
    op.drop_table("provider_callbacks")
    with op.batch_alter_table("promises", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promises_loan_id"))

    op.drop_table("promises")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_loan_id"))

    op.drop_table("payments")
    with op.batch_alter_table("payment_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_plans_loan_id"))

    op.drop_table("payment_plans")
    with op.batch_alter_table("opt_outs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_opt_outs_borrower_id"))

    op.drop_table("opt_outs")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_status_send_at")
        batch_op.drop_index(batch_op.f("ix_messages_stage"))
        batch_op.drop_index(batch_op.f("ix_messages_sent_at"))
        batch_op.drop_index(batch_op.f("ix_messages_reason"))
        batch_op.drop_index(batch_op.f("ix_messages_provider_id"))
        batch_op.drop_index("ix_messages_loan_status")
        batch_op.drop_index(batch_op.f("ix_messages_created_at"))
        batch_op.drop_index(batch_op.f("ix_messages_channel"))
        batch_op.drop_index(batch_op.f("ix_messages_campaign_id"))
        batch_op.drop_index("ix_messages_borrower_created")

    op.drop_table("messages")
    with op.batch_alter_table("loans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loans_borrower_id"))

    op.drop_table("loans")
    op.drop_table("invalid_recipients")
    with op.batch_alter_table("inbound_replies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_replies_sender"))
        batch_op.drop_index(batch_op.f("ix_inbound_replies_received_at"))
        batch_op.drop_index(batch_op.f("ix_inbound_replies_borrower_id"))

    op.drop_table("inbound_replies")
    with op.batch_alter_table("field_visits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_field_visits_loan_id"))

    op.drop_table("field_visits")
    with op.batch_alter_table("contact_restrictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_restrictions_borrower_id"))

    op.drop_table("contact_restrictions")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_status"))

    op.drop_table("campaigns")
    op.drop_table("borrowers")
