"""Pytest fixtures for the loopback Twilio emulator.

Use from a test module with `from tests.twilio_fixtures import twilio_emulator  # noqa: F401`,
or import it into tests/conftest.py to make it available everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outreach.settings import Settings, load_settings
from tests.twilio_emulator import TwilioEmulator

TWILIO_FROM = "+15005550006"  # Twilio's magic "valid sender" test number


def twilio_settings(
    emulator: TwilioEmulator, public_url: str = "http://127.0.0.1:8000", **env: str
) -> Settings:
    """Settings that send SMS through `emulator`; `env` adds or overrides variables."""
    values = {
        "OUTREACH_SMS_PROVIDER": "twilio",
        "OUTREACH_PUBLIC_URL": public_url,
        "TWILIO_ACCOUNT_SID": emulator.account_sid,
        "TWILIO_AUTH_TOKEN": emulator.auth_token,
        "TWILIO_FROM": TWILIO_FROM,
        "TWILIO_API_BASE_URL": emulator.base_url,
    }
    values.update(env)
    return load_settings(values)


def twilio_env(emulator: TwilioEmulator) -> dict[str, str]:
    """The environment variables that point an `outreach` process at `emulator`."""
    return {
        "OUTREACH_SMS_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": emulator.account_sid,
        "TWILIO_AUTH_TOKEN": emulator.auth_token,
        "TWILIO_FROM": TWILIO_FROM,
        "TWILIO_API_BASE_URL": emulator.base_url,
    }


@pytest.fixture
def twilio_emulator() -> Iterator[TwilioEmulator]:
    """A running emulator on a free loopback port, stopped after the test."""
    with TwilioEmulator() as emulator:
        yield emulator
