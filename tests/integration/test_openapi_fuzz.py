"""The OpenAPI document holds (issue 21 §1): schemathesis fuzzes the live service from its own
/openapi.json with every check, signing what must be signed, and no check may fail.

- Webhooks (`X-Outreach-Signature`, SPEC §4) and Twilio callbacks (`X-Twilio-Signature`,
  SPEC §7) are security schemes in the document; schemathesis sets a placeholder where the
  credential goes, and `Signer` (the session's requests auth) replaces it with the real
  signature over the exact bytes sent. A case schemathesis sends without the credential, or
  with one it made up, stays unsigned and must be refused.
- Ops routes get a bearer token: one run as an admin, one as a viewer.
- The seed is fixed and generation deterministic, so a failure reproduces.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import phonenumbers
import pytest
import redis
import requests
import schemathesis
from fastapi.routing import iter_route_contexts
from openapi_spec_validator import validate
from requests.models import PreparedRequest
from sqlalchemy import Engine
from twilio.request_validator import RequestValidator

from outreach.api.webhook import SIGNATURE_HEADER, signature_for
from outreach.service.log import encode_cursor
from tests.integration.conftest import serve
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, WEBHOOK_SECRET, LiveService

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    # schemathesis' own strategies draw from `random` (its business, not a fault of the API)
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

TWILIO_TOKEN = "twilio-auth-token-for-fuzzing"
# what schemathesis puts where a signature goes; `Signer` swaps it for the real one
PLACEHOLDER = "sign-me"
SEED = 20261204
# examples per operation in the fuzzing phase, per run (admin, viewer)
MAX_EXAMPLES = {"admin": 25, "viewer": 8}

CASES: dict[str, int] = {}


class Signer(requests.auth.AuthBase):
    """Signs a prepared request whose signature header holds the placeholder."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url
        self.twilio = RequestValidator(TWILIO_TOKEN)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        if request.headers.get(SIGNATURE_HEADER) == PLACEHOLDER:
            signature = signature_for(WEBHOOK_SECRET.encode(), raw, time.time())
            request.headers[SIGNATURE_HEADER] = signature
        if request.headers.get("X-Twilio-Signature") == PLACEHOLDER:
            path = urllib.parse.urlsplit(request.url or "").path
            fields = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            signature = self.twilio.compute_signature(self.public_url + path, dict(fields))
            request.headers["X-Twilio-Signature"] = signature
        return request


@pytest.fixture(scope="module", autouse=True)
def _case_count() -> Iterator[None]:
    """How many cases each run sent, on the terminal (with -s) and in the log."""
    yield
    print(f"\nschemathesis cases sent: {CASES}")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's pytest wrapper reads `node._nodeid`, which pytest 9 no longer has
    (it is `nodeid`): given back, so the wrapper can label each operation's subtest."""
    request.node._nodeid = request.node.nodeid


@pytest.fixture
def fuzzed(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    # one address sends every case, hundreds of them refused by design: no rate limit here
    # (429 is in the document all the same)
    limits = {
        f"OUTREACH_RATE_LIMIT_{name}": "off"
        for name in ("WEBHOOK", "TWILIO", "UNSUBSCRIBE", "UNSIGNED", "LOGIN_FAILURES", "OPS_TOKEN")
    }
    yield from serve(postgres_engine, env={"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, **limits})


def _schema(live: LiveService, role: str) -> Any:
    token = ADMIN_TOKEN if role == "admin" else VIEWER_TOKEN
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # a connection per request: none is left open when the server stops
            "headers": {"Connection": "close"},
            "checks": {"enabled": True},
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES[role],
                "deterministic": True,
                "database": "none",
                # the document says no text may hold U+0000 (PostgreSQL cannot store it)
                "allow-x00": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "auth": {
                "openapi": {
                    "OpsToken": {"bearer": token},
                    "OutreachSignature": {"api_key": PLACEHOLDER},
                    "TwilioSignature": {"api_key": PLACEHOLDER},
                }
            },
        }
    )
    return schemathesis.openapi.from_url(f"{live.base_url}/openapi.json", config=config)


@pytest.fixture
def admin_schema(fuzzed: LiveService) -> Any:
    return _schema(fuzzed, "admin")


@pytest.fixture
def viewer_schema(fuzzed: LiveService) -> Any:
    return _schema(fuzzed, "viewer")


# --- rules the document states in words only (JSON Schema cannot say them) ---------------
#
# A positive case (one schemathesis means to be valid) that breaks one of them would be
# refused with 422, rightly; it is repaired to the nearest value that keeps the rule, so
# the check that valid data is accepted tests the rest. Negative cases are sent as drawn.

GOOD_NAME = "Li Wei"
GOOD_PHONE = "+8613800138000"


def _visible_name(value: Any) -> bool:
    """Not blank, one line of visible text, nothing that reads as a link or an address."""
    return (
        isinstance(value, str)
        and value.strip() != ""
        and value.isprintable()
        and not any(mark in value for mark in (".", "@", "://"))
    )


def _possible_phone(value: Any) -> bool:
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(value, None))
    except phonenumbers.NumberParseException:
        return False


def _repair_event(event: Any) -> None:
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict):
        return
    borrower = data.get("borrower")
    for holder, key in ((borrower, "name"), (data, "collector_name")):
        if isinstance(holder, dict) and key in holder and not _visible_name(holder[key]):
            holder[key] = GOOD_NAME
    if isinstance(borrower, dict) and isinstance(borrower.get("phones"), list):
        borrower["phones"] = [p if _possible_phone(p) else GOOD_PHONE for p in borrower["phones"]]


def _repair_campaign(body: dict[str, Any], live: LiveService) -> None:
    """Either a template or variants; min ≤ max; end_at after start_at and after now; every
    template with a part for the channel in every locale the segment reaches."""
    renderer, policy = live.services.renderer, live.services.policy
    if body.get("template") is not None and body.get("variants") is not None:
        body["variants"] = None
    segment = body.get("segment")
    if isinstance(segment, dict):
        for low, high in (("dpd_min", "dpd_max"), ("amount_min", "amount_max")):
            a, b = segment.get(low), segment.get(high)
            if a is not None and b is not None and Decimal(str(a)) > Decimal(str(b)):
                segment[low], segment[high] = b, a
    reached = (segment or {}).get("locales") or list(policy.locales)
    channel = body.get("channel")
    usable = [
        name
        for name in renderer.templates()
        if name.startswith("campaign_")
        and all(renderer.has(name, channel, locale) for locale in reached)
    ]
    if not usable:  # no campaign template reaches every locale: ask for one that exists
        if isinstance(segment, dict):
            segment["locales"] = [policy.locales[0]]
        reached = [policy.locales[0]]
        usable = [n for n in renderer.templates() if renderer.has(n, channel, reached[0])]
        usable = [n for n in usable if n.startswith("campaign_")]
    if body.get("variants"):
        seen: set[str] = set()
        for index, variant in enumerate(body["variants"]):
            if variant.get("template") not in usable:
                variant["template"] = usable[0]
            if variant["name"] in seen:
                variant["name"] = f"{variant['name']}-{index}"
            seen.add(variant["name"])
    elif body.get("template") not in usable:
        body["template"] = usable[0]
        body["variants"] = None
    if body.get("end_at") is not None:
        body["end_at"] = "2199-12-31T00:00:00Z"
        body["start_at"] = min(body["start_at"], "2199-01-01T00:00:00Z")


def _repair_preview(body: dict[str, Any], live: LiveService) -> None:
    renderer = live.services.renderer
    if not renderer.has(body["template"], body["channel"], body["locale"]):
        body["template"], body["locale"] = next(
            (template, locale)
            for template, channel, locale in renderer.available()
            if channel.value == body["channel"]
        )


def _repair(case: Any, live: LiveService) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    path, method, body = case.operation.path, case.method.upper(), case.body
    if path == "/v1/events" and isinstance(body, dict):
        _repair_event(body)
    elif path == "/v1/events/batch" and isinstance(body, dict):
        for event in body.get("events") or ():
            _repair_event(event)
    elif (path, method) == ("/v1/campaigns", "POST") and isinstance(body, dict):
        _repair_campaign(body, live)
    elif path == "/v1/templates/preview" and isinstance(body, dict):
        _repair_preview(body, live)
    elif path == "/v1/messages" and case.query and "cursor" in case.query:
        # opaque: only a next_cursor the service gave continues a page
        case.query["cursor"] = encode_cursor("msg_zzzz")


def _run(case: Any, live: LiveService, role: str) -> None:
    CASES[role] = CASES.get(role, 0) + 1
    _repair(case, live)
    session = requests.Session()
    session.auth = Signer(live.base_url)
    with session:
        case.call_and_validate(session=session)


admin = schemathesis.pytest.from_fixture("admin_schema")
viewer = schemathesis.pytest.from_fixture("viewer_schema")


@admin.parametrize()
def test_the_api_behaves_as_its_document_says_for_an_admin(case: Any, fuzzed: LiveService) -> None:
    _run(case, fuzzed, "admin")


@viewer.parametrize()
def test_the_api_behaves_as_its_document_says_for_a_viewer(case: Any, fuzzed: LiveService) -> None:
    _run(case, fuzzed, "viewer")


# FastAPI's own pages of the document, and the pages for people (`include_in_schema=False`):
# `/` only sends a browser on to /ui/
UNDOCUMENTED = ("/openapi.json", "/docs", "/redoc", "/ui")
PAGES = ("/",)


def test_the_document_is_openapi_3_and_names_every_route(fuzzed: LiveService) -> None:
    document = fuzzed.client.get("/openapi.json").json()
    validate(document)
    assert document["openapi"].startswith("3.")
    served: set[tuple[str, str]] = set()
    for route in iter_route_contexts(fuzzed.app.routes):
        path, methods = route.path_format, route.methods
        if not methods or not path or path.startswith(UNDOCUMENTED) or path in PAGES:
            continue
        served |= {(path, method.lower()) for method in methods if method != "HEAD"}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented
    # one error shape: every 4xx and 5xx is a Problem, but the unsubscribe pages (for people)
    # and /ready's 503 (its own report of what is not ready)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status[0] not in "45" or path.startswith("/v1/unsubscribe/"):
                    continue
                if (path, status) == ("/ready", "503"):
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (path, method, status)
