"""The one reader of the environment: typed, validated once at start, secrets hidden."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from outreach.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path("var")
DEFAULT_DATABASE_URL = "sqlite:///var/outreach.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_POLICY = Path("schedules/default.yaml")
DEFAULT_TEMPLATES = Path("templates")

SMS_PROVIDERS = ("console", "twilio", "simulated")
EMAIL_PROVIDERS = ("console", "smtp", "simulated")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
ROLES = ("admin", "viewer")
# shorter ops tokens and link secrets are refused at start: guessable by anyone who can ask
MIN_SECRET_LENGTH = 16


class Secret:
    """A string that never shows itself in a repr, a log line or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class OpsToken:
    token: Secret
    role: str
    # who the token is, as the audit log shows them; None: a fingerprint of the token
    name: str | None = None

    @property
    def actor(self) -> str:
        if self.name:
            return self.name
        digest = hashlib.sha256(self.token.reveal().encode()).hexdigest()[:8]
        return f"{self.role}-{digest}"


@dataclass(frozen=True)
class Rate:
    """At most `count` in any fixed window of `seconds` (count 0: no limit)."""

    count: int
    seconds: int

    @property
    def limited(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class RateLimits:
    """Per client address, and the ops API's per ops token (see README, Configuration). The
    webhook's is a flood guard far above what a loan system sends (a nightly run is
    thousands of events a second from a few addresses): its backpressure is the intake's
    bounded queue (503 with Retry-After)."""

    webhook: Rate = Rate(600_000, 60)
    twilio: Rate = Rate(60_000, 60)
    unsubscribe: Rate = Rate(300, 60)
    # answers refusing a signature (401 on the webhook, 403 on Twilio's callbacks)
    unsigned: Rate = Rate(1_000, 60)
    # failed logins to the pages (401 from POST /ui/login)
    login_failures: Rate = Rate(10, 900)
    # requests with one ops token to the ops API, from wherever they come: a leaked token, or
    # a script gone wrong, cannot export the log in a loop
    ops_token: Rate = Rate(12_000, 60)


@dataclass(frozen=True)
class Settings:
    database_url: Secret
    redis_url: Secret | None
    webhook_secret: Secret | None
    ops_tokens: tuple[OpsToken, ...]
    public_url: str
    sms_provider: str
    email_provider: str
    twilio_account_sid: str | None
    twilio_auth_token: Secret | None
    twilio_from: str | None
    twilio_messaging_service_sid: str | None
    twilio_api_base_url: str | None
    sms_rate: float
    smtp_host: str
    smtp_port: int
    smtp_username: str | None
    smtp_password: Secret | None
    smtp_starttls: bool
    email_from: str | None
    policy_path: Path
    # keys of the signed links in messages (unsubscribe), newest first: links are signed with
    # the first and verified against each, so a rotated-out key keeps its links working
    link_secrets: tuple[Secret, ...] = ()
    # SMTP AUTH over a connection without STARTTLS (a relay on this machine or a private net)
    smtp_allow_plaintext_auth: bool = False
    templates_dir: Path = field(default_factory=lambda: _shipped(DEFAULT_TEMPLATES))
    var_dir: Path = VAR_DIR
    # seconds a worker's lease outlives its last heartbeat (see outreach/worker_leases.py)
    worker_lease_seconds: float = 20.0
    # the level and the format of every process's log (outreach/logs.py)
    log_level: str = "INFO"
    log_format: str = "text"
    # seconds to reach PostgreSQL, and that one statement may run (0: unbounded); store/db.py
    database_connect_timeout: float = 5.0
    database_statement_timeout: float = 60.0
    # requests per client address on the public routes (outreach/api/limits.py)
    rate_limits: RateLimits = field(default_factory=lambda: RateLimits())

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    def role_for(self, token: str) -> str | None:
        found = self.ops_token(token)
        return found.role if found is not None else None

    def ops_token(self, token: str) -> OpsToken | None:
        """The configured token equal to `token` (compared in constant time)."""
        given = token.encode("utf-8", "surrogateescape")
        found = None
        for known in self.ops_tokens:
            if hmac.compare_digest(known.token.reveal().encode(), given):
                found = known
        return found


def _shipped(relative: Path) -> Path:
    """A file the project ships: from the working directory if it has one, else the checkout."""
    return relative if relative.exists() else PROJECT_ROOT / relative


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _database_url(env: Mapping[str, str]) -> Secret:
    raw = _optional(env, "OUTREACH_DATABASE_URL") or DEFAULT_DATABASE_URL
    scheme = raw.split(":", 1)[0].lower() if ":" in raw else ""
    if scheme.startswith("postgres"):
        # Accept the common `postgres://` and `postgresql://` spellings and use psycopg 3.
        rest = raw.split("://", 1)[1] if "://" in raw else ""
        if not rest:
            raise ConfigurationError(
                "OUTREACH_DATABASE_URL: expected postgresql://user@host:port/database"
            )
        driver = scheme.split("+", 1)[1] if "+" in scheme else "psycopg"
        if driver != "psycopg":
            raise ConfigurationError(
                f"OUTREACH_DATABASE_URL: driver '{driver}' is not supported; use postgresql+psycopg"
            )
        return Secret(f"postgresql+psycopg://{rest}")
    if scheme == "sqlite":
        if not raw.startswith("sqlite:///"):
            raise ConfigurationError(
                "OUTREACH_DATABASE_URL: a SQLite URL needs a path, e.g. sqlite:///var/outreach.db"
            )
        return Secret(raw)
    raise ConfigurationError(
        f"OUTREACH_DATABASE_URL: unsupported database URL scheme '{scheme or raw}'; "
        "use sqlite:///path or postgresql://user@host/db"
    )


def _redis_url(env: Mapping[str, str]) -> Secret | None:
    raw = _optional(env, "OUTREACH_REDIS_URL")
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ConfigurationError(
            "OUTREACH_REDIS_URL: expected redis://host:port/db (or rediss://, unix://)"
        )
    return Secret(raw)


def _ops_tokens(env: Mapping[str, str]) -> tuple[OpsToken, ...]:
    raw = _optional(env, "OUTREACH_OPS_TOKENS")
    if raw is None:
        return ()
    tokens = []
    for index, item in enumerate(part.strip() for part in raw.split(",")):
        if not item:
            continue
        token, sep, role = item.rpartition(":")
        name: str | None = None
        if role not in ROLES and sep:
            # token:role:name
            head, sep_name, maybe_role = token.rpartition(":")
            if sep_name and maybe_role in ROLES:
                token, name, role = head, role, maybe_role
        if not sep or not token:
            raise ConfigurationError(
                f"OUTREACH_OPS_TOKENS: entry {index + 1} must be token:role or token:role:name"
                " (role admin or viewer)"
            )
        if role not in ROLES:
            raise ConfigurationError(
                f"OUTREACH_OPS_TOKENS: entry {index + 1} has role '{role}'; use admin or viewer"
            )
        if name is not None and not name.strip():
            raise ConfigurationError(f"OUTREACH_OPS_TOKENS: entry {index + 1} has an empty name")
        if len(token) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"OUTREACH_OPS_TOKENS: entry {index + 1} has a token shorter than "
                f"{MIN_SECRET_LENGTH} characters"
            )
        tokens.append(OpsToken(Secret(token), role, name.strip() if name else None))
    return tuple(tokens)


def _link_secrets(env: Mapping[str, str]) -> tuple[Secret, ...]:
    raw = _optional(env, "OUTREACH_LINK_SECRET")
    if raw is None:
        return ()
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    for index, key in enumerate(keys):
        if len(key) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"OUTREACH_LINK_SECRET: entry {index + 1} is shorter than "
                f"{MIN_SECRET_LENGTH} characters"
            )
    return tuple(Secret(key) for key in keys)


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (_optional(env, name) or default).lower()
    if value not in allowed:
        raise ConfigurationError(f"{name}: '{value}' is not one of {', '.join(allowed)}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _optional(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}: '{raw}' is not a boolean (true/false)")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: '{raw}' is not a number") from None
    if value < minimum:
        raise ConfigurationError(f"{name}: must be at least {minimum:g}, got {raw}")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = _optional(env, name) or default
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{name}: '{raw}' is not an http(s) URL")
    return raw.rstrip("/")


def _rate(env: Mapping[str, str], name: str, default: Rate) -> Rate:
    raw = _optional(env, name)
    if raw is None:
        return default
    if raw.lower() in ("0", "off"):
        return Rate(0, default.seconds)
    count, sep, seconds = raw.partition("/")
    digits = count.isascii() and count.isdigit() and seconds.isascii() and seconds.isdigit()
    if not (sep and digits):
        raise ConfigurationError(f"{name}: '{raw}' is not COUNT/SECONDS (e.g. 10/900) or off")
    if int(seconds) < 1 or int(seconds) > 86_400:
        raise ConfigurationError(f"{name}: the window must be 1 to 86400 seconds, got {seconds}")
    return Rate(int(count), int(seconds))


def _rate_limits(env: Mapping[str, str]) -> RateLimits:
    defaults = RateLimits()
    return RateLimits(
        webhook=_rate(env, "OUTREACH_RATE_LIMIT_WEBHOOK", defaults.webhook),
        twilio=_rate(env, "OUTREACH_RATE_LIMIT_TWILIO", defaults.twilio),
        unsubscribe=_rate(env, "OUTREACH_RATE_LIMIT_UNSUBSCRIBE", defaults.unsubscribe),
        unsigned=_rate(env, "OUTREACH_RATE_LIMIT_UNSIGNED", defaults.unsigned),
        login_failures=_rate(env, "OUTREACH_RATE_LIMIT_LOGIN_FAILURES", defaults.login_failures),
        ops_token=_rate(env, "OUTREACH_RATE_LIMIT_OPS_TOKEN", defaults.ops_token),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigurationError naming the first bad one."""
    env = os.environ if env is None else env
    sms_provider = _choice(env, "OUTREACH_SMS_PROVIDER", "console", SMS_PROVIDERS)
    email_provider = _choice(env, "OUTREACH_EMAIL_PROVIDER", "console", EMAIL_PROVIDERS)
    twilio_sid = _optional(env, "TWILIO_ACCOUNT_SID")
    twilio_token = _optional(env, "TWILIO_AUTH_TOKEN")
    twilio_from = _optional(env, "TWILIO_FROM")
    twilio_service = _optional(env, "TWILIO_MESSAGING_SERVICE_SID")
    if sms_provider == "twilio":
        if twilio_sid is None:
            raise ConfigurationError(
                "TWILIO_ACCOUNT_SID: required when OUTREACH_SMS_PROVIDER=twilio"
            )
        if twilio_token is None:
            raise ConfigurationError(
                "TWILIO_AUTH_TOKEN: required when OUTREACH_SMS_PROVIDER=twilio"
            )
        if twilio_from is None and twilio_service is None:
            raise ConfigurationError(
                "TWILIO_FROM: set it (or TWILIO_MESSAGING_SERVICE_SID) "
                "when OUTREACH_SMS_PROVIDER=twilio"
            )
    email_from = _optional(env, "EMAIL_FROM")
    if email_provider == "smtp" and email_from is None:
        raise ConfigurationError("EMAIL_FROM: required when OUTREACH_EMAIL_PROVIDER=smtp")
    smtp_port = _number(env, "SMTP_PORT", 25, minimum=1)
    if smtp_port != int(smtp_port) or smtp_port > 65535:
        raise ConfigurationError(f"SMTP_PORT: '{env.get('SMTP_PORT')}' is not a port number")
    policy_path = Path(_optional(env, "OUTREACH_POLICY") or _shipped(DEFAULT_POLICY))
    return Settings(
        database_url=_database_url(env),
        redis_url=_redis_url(env),
        webhook_secret=Secret(v) if (v := _optional(env, "OUTREACH_WEBHOOK_SECRET")) else None,
        ops_tokens=_ops_tokens(env),
        link_secrets=_link_secrets(env),
        public_url=_url(env, "OUTREACH_PUBLIC_URL", DEFAULT_PUBLIC_URL) or DEFAULT_PUBLIC_URL,
        sms_provider=sms_provider,
        email_provider=email_provider,
        twilio_account_sid=twilio_sid,
        twilio_auth_token=Secret(twilio_token) if twilio_token else None,
        twilio_from=twilio_from,
        twilio_messaging_service_sid=twilio_service,
        twilio_api_base_url=_url(env, "TWILIO_API_BASE_URL", None),
        sms_rate=_number(env, "OUTREACH_SMS_RATE", 1.0, minimum=0.01),
        smtp_host=_optional(env, "SMTP_HOST") or "localhost",
        smtp_port=int(smtp_port),
        smtp_username=_optional(env, "SMTP_USERNAME"),
        smtp_password=Secret(v) if (v := _optional(env, "SMTP_PASSWORD")) else None,
        smtp_starttls=_bool(env, "SMTP_STARTTLS", False),
        smtp_allow_plaintext_auth=_bool(env, "SMTP_ALLOW_PLAINTEXT_AUTH", False),
        email_from=email_from,
        policy_path=policy_path,
        # at least 8 s: the reconciler then asks the provider 1.5 leases (12 s) after the last
        # hand-over a dead worker can have started, more than a Twilio call may last (10 s)
        worker_lease_seconds=_number(env, "OUTREACH_WORKER_LEASE_SECONDS", 20.0, minimum=8),
        log_level=_choice(env, "OUTREACH_LOG_LEVEL", "info", LOG_LEVELS).upper(),
        log_format=_choice(env, "OUTREACH_LOG_FORMAT", "text", LOG_FORMATS),
        database_connect_timeout=_number(env, "OUTREACH_DATABASE_CONNECT_TIMEOUT", 5.0, minimum=1),
        database_statement_timeout=_number(
            env, "OUTREACH_DATABASE_STATEMENT_TIMEOUT", 60.0, minimum=0
        ),
        rate_limits=_rate_limits(env),
    )
