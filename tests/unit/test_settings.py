from __future__ import annotations

import pytest

from outreach.errors import ConfigurationError
from outreach.settings import load_settings


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings({})
    assert settings.database_url.reveal() == "sqlite:///var/outreach.db"
    assert settings.uses_embedded_redis
    assert settings.sms_provider == "console"
    assert settings.email_provider == "console"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.sms_rate == 1.0
    assert (settings.smtp_host, settings.smtp_port) == ("localhost", 25)
    assert str(settings.policy_path) == "schedules/default.yaml"


def test_postgres_urls_use_psycopg() -> None:
    settings = load_settings({"OUTREACH_DATABASE_URL": "postgres://u@db:5432/outreach"})
    assert settings.database_url.reveal() == "postgresql+psycopg://u@db:5432/outreach"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OUTREACH_DATABASE_URL": "nonsense://"}, "OUTREACH_DATABASE_URL"),
        ({"OUTREACH_DATABASE_URL": "postgresql+asyncpg://h/db"}, "OUTREACH_DATABASE_URL"),
        ({"OUTREACH_REDIS_URL": "http://localhost"}, "OUTREACH_REDIS_URL"),
        ({"OUTREACH_OPS_TOKENS": "abc:root"}, "OUTREACH_OPS_TOKENS"),
        ({"OUTREACH_OPS_TOKENS": "justatoken"}, "OUTREACH_OPS_TOKENS"),
        ({"OUTREACH_OPS_TOKENS": "abc:admin"}, "OUTREACH_OPS_TOKENS"),
        ({"OUTREACH_LINK_SECRET": "abc"}, "OUTREACH_LINK_SECRET"),
        ({"OUTREACH_SMS_PROVIDER": "carrier-pigeon"}, "OUTREACH_SMS_PROVIDER"),
        ({"OUTREACH_SMS_RATE": "fast"}, "OUTREACH_SMS_RATE"),
        ({"OUTREACH_SMS_RATE": "0"}, "OUTREACH_SMS_RATE"),
        ({"SMTP_PORT": "99999"}, "SMTP_PORT"),
        ({"SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS"),
        ({"OUTREACH_PUBLIC_URL": "example.com"}, "OUTREACH_PUBLIC_URL"),
        ({"OUTREACH_SMS_PROVIDER": "twilio"}, "TWILIO_ACCOUNT_SID"),
        (
            {
                "OUTREACH_SMS_PROVIDER": "twilio",
                "TWILIO_ACCOUNT_SID": "AC1",
                "TWILIO_AUTH_TOKEN": "t",
            },
            "TWILIO_FROM",
        ),
        ({"OUTREACH_EMAIL_PROVIDER": "smtp"}, "EMAIL_FROM"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env)
    message = str(raised.value)
    assert message.startswith(named + ":")
    assert "\n" not in message


def test_secrets_never_show_in_reprs() -> None:
    settings = load_settings(
        {
            "OUTREACH_DATABASE_URL": "postgresql://app:hunter2@db/outreach",
            "OUTREACH_WEBHOOK_SECRET": "whsec-value",
            "OUTREACH_OPS_TOKENS": "tok-admin-0123456789:admin,tok-view-0123456789:viewer",
            "OUTREACH_LINK_SECRET": "link-key-0123456789",
            "TWILIO_AUTH_TOKEN": "twilio-token-value",
            "SMTP_PASSWORD": "smtp-password-value",
        }
    )
    shown = repr(settings) + str(settings) + f"{settings}"
    for secret in (
        "hunter2",
        "whsec-value",
        "tok-admin",
        "tok-view",
        "link-key",
        "twilio-token-value",
        "smtp-password-value",
    ):
        assert secret not in shown
    assert settings.role_for("tok-admin-0123456789") == "admin"
    assert settings.role_for("tok-view-0123456789") == "viewer"
    assert settings.role_for("nope") is None


def test_link_secrets_are_a_list_newest_first_and_their_own_setting() -> None:
    settings = load_settings(
        {
            "OUTREACH_WEBHOOK_SECRET": "whsec-value-0123456789",
            "OUTREACH_LINK_SECRET": " newest-link-key-0123 , , older-link-key-4567 ",
        }
    )
    assert [key.reveal() for key in settings.link_secrets] == [
        "newest-link-key-0123",
        "older-link-key-4567",
    ]
    # nothing stands in for a missing key: processes that need one refuse to start (cli)
    assert load_settings({"OUTREACH_WEBHOOK_SECRET": "whsec-value-0123456789"}).link_secrets == ()


@pytest.mark.parametrize(
    "env",
    [
        {"OUTREACH_OPS_TOKENS": "long-enough-token-0123:admin,xyz:viewer:ann"},
        {"OUTREACH_LINK_SECRET": "long-enough-link-key,xyz"},
    ],
)
def test_a_short_token_or_link_secret_is_refused_without_showing_it(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=r"entry 2 .*shorter than 16 characters") as raised:
        load_settings(env)
    assert "xyz" not in str(raised.value)
