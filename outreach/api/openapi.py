"""/openapi.json as the API behaves (issue 21 §1): every status each operation can answer, one
error body (`Problem`) for every 4xx and 5xx, the enums the filters check, the content types
answered, and the bodies of the webhooks (each event type's `data`), the batch endpoint and the
Twilio callbacks. FastAPI derives the rest from the routes; `build` completes it.

tests/integration/test_openapi_fuzz.py holds it to that: schemathesis fuzzes the live service
from this document with every check.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts

from outreach.api import auth
from outreach.api.schemas import Accepted, FieldProblem, Problem
from outreach.api.webhook import MAX_BATCH_EVENTS, SIGNATURE_HEADER
from outreach.domain import (
    CAMPAIGN_STATUSES,
    Channel,
    ClosedReason,
    Purpose,
    Reason,
    Restriction,
    Status,
)
from outreach.render.preview import template_list
from outreach.service import campaigns
from outreach.wiring import Services

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
MESSAGE_FILTER_PATHS = ("/v1/messages", "/v1/messages/export.csv")
TWILIO_PATHS = ("/v1/providers/twilio/status", "/v1/providers/twilio/inbound")
# routes that touch neither the database nor Redis on the way to their answer
NO_STORE_PATHS = ("/health", "/metrics", "/ready")
# the routes the outside world reaches without an ops token: rate limited per address
PUBLIC_PREFIXES = ("/v1/events", "/v1/providers/", "/v1/unsubscribe/")

REASONS = {
    400: "Bad Request: the body is not valid JSON",
    401: "Unauthorized: no valid credential",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity: the offending field is named",
    429: "Too Many Requests",
    503: "Service Unavailable: the database or Redis cannot serve it now; retry",
}

# --- the shapes of values (patterns in [0-9], not \d: a JSON Schema \d may be any digit) ---

_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_YEAR = "(?:19|20|21)[0-9]{2}"
DATE = {
    "type": "string",
    "pattern": f"^{_YEAR}-{_DAY}$",
    "description": "a calendar date, YYYY-MM-DD, 1900-01-01 … 2199-12-31",
    "examples": ["2026-12-04"],
}
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
_OFFSET = "(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])"
INSTANT = {
    "type": "string",
    "pattern": f"^{_YEAR}-{_DAY}T{_TIME}{_OFFSET}$",
    "description": "an RFC 3339 time with its UTC offset, years 1900 … 2199",
    "examples": ["2026-12-04T09:00:00+08:00"],
}
MONEY = {
    "description": 'a decimal string such as "120.50" (at most 4 decimals, below a trillion '
    "either way); a JSON integer is read as one too",
    "anyOf": [
        {"type": "string", "pattern": "^-?(?:0|[1-9][0-9]{0,11})(?:\\.[0-9]{1,4})?$"},
        {"type": "integer", "minimum": -(10**12), "maximum": 10**12},
    ],
    "examples": ["120.50"],
}
AMOUNT = {
    "type": "string",
    "pattern": "^(?:0|[1-9][0-9]{0,14})(?:\\.[0-9]{1,4})?$",
    "description": 'a decimal string, zero or more, such as "50.00"',
}
IDENTIFIER = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "pattern": "^[^/]+$",
    "description": "no '/': an id is a path segment of its pages and routes",
}
PHONE = {
    "type": "string",
    "pattern": "^\\+[1-9][0-9]{6,14}$",
    "description": "E.164, a number libphonenumber considers possible",
    "examples": ["+8613800138000"],
}
PERSON_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "description": "as written in messages: not blank, one line of visible text (no control, "
    "line-break or bidi character), no link, web or email address",
}
EMAIL = {
    "type": "string",
    "maxLength": 320,
    "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$",
    "description": "an email address (no spaces, CR or LF)",
}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(
    properties: dict[str, Any], required: list[str], *, closed: bool = False, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if closed:
        schema["additionalProperties"] = False
    return schema | extra


def event_data_schemas() -> dict[str, dict[str, Any]]:
    """Each event type's `data` (SPEC §4), as service/parse.py reads it. Objects of the loan
    system may grow fields (kept out of our state, not refused), except the two wrappers."""
    address = _object(
        {
            "country": _nullable({"type": "string", "minLength": 2, "maxLength": 2}),
            "region": _nullable({"type": "string", "maxLength": 100}),
            "city": _nullable({"type": "string", "maxLength": 100}),
            "postal_code": _nullable({"type": "string", "maxLength": 20}),
        },
        [],
    )
    borrower = _object(
        {
            "id": IDENTIFIER,
            "name": PERSON_NAME,
            "locale": {"type": "string", "minLength": 2, "maxLength": 20, "examples": ["zh-CN"]},
            "phones": {"type": "array", "items": PHONE},
            "email": _nullable(EMAIL),
            "timezone": _nullable(
                {"enum": sorted(zoneinfo.available_timezones()), "description": "IANA"}
            ),
            "address": _nullable(address),
            "consent": _object({"sms": {"type": "boolean"}, "email": {"type": "boolean"}}, []),
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}},
        },
        ["id", "name", "locale"],
    )
    loan = _object(
        {
            "id": IDENTIFIER,
            "borrower_id": IDENTIFIER,
            "product": {"type": "string", "minLength": 1, "maxLength": 100},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "amount_due": MONEY,
            "balance": MONEY,
            "days_past_due": {"type": "integer", "minimum": -36_500, "maximum": 36_500},
            "due_date": DATE,
            "account_number": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        [
            "id",
            "borrower_id",
            "product",
            "currency",
            "amount_due",
            "balance",
            "days_past_due",
            "due_date",
            "account_number",
        ],
    )
    clock = {"type": "string", "pattern": "^(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?$"}
    window = _object(
        {
            "start": clock,
            "end": clock,
            "days": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 7}},
        },
        ["start", "end"],
    )
    return {
        "borrower.upserted": _object({"borrower": borrower}, ["borrower"], closed=True),
        "loan.updated": _object({"loan": loan}, ["loan"], closed=True),
        "payment.received": _object(
            {
                "loan_id": IDENTIFIER,
                "payment_id": IDENTIFIER,
                "amount": MONEY,
                "paid_at": INSTANT,
                "amount_due_after": MONEY,
            },
            ["loan_id", "payment_id", "amount", "paid_at", "amount_due_after"],
        ),
        "promise_to_pay.created": _object(
            {
                "loan_id": IDENTIFIER,
                "promise_id": IDENTIFIER,
                "amount": MONEY,
                "promised_date": DATE,
            },
            ["loan_id", "promise_id", "amount", "promised_date"],
        ),
        "payment_plan.created": _object(
            {
                "loan_id": IDENTIFIER,
                "plan_id": IDENTIFIER,
                "instalments": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 120,
                    "items": _object({"due_date": DATE, "amount": MONEY}, ["due_date", "amount"]),
                },
            },
            ["loan_id", "plan_id", "instalments"],
        ),
        "field_visit.scheduled": _object(
            {
                "loan_id": IDENTIFIER,
                "visit_id": IDENTIFIER,
                "visit_at": INSTANT,
                "collector_name": PERSON_NAME,
                "collector_id": IDENTIFIER,
            },
            ["loan_id", "visit_id", "visit_at", "collector_name", "collector_id"],
        ),
        "contact.restricted": _object(
            {
                "borrower_id": IDENTIFIER,
                "restriction": {"enum": [item.value for item in Restriction]},
                "active": {"type": "boolean"},
                "windows": _nullable({"type": "array", "items": window}),
            },
            ["borrower_id", "restriction", "active"],
        ),
        "loan.closed": _object(
            {"loan_id": IDENTIFIER, "reason": {"enum": [item.value for item in ClosedReason]}},
            ["loan_id", "reason"],
        ),
    }


def _schema_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace("_", ".").split(".")) + "Event"


def event_schemas() -> dict[str, dict[str, Any]]:
    """`Event` (one of the envelopes, told apart by `type`) and an envelope per type."""
    schemas: dict[str, dict[str, Any]] = {}
    mapping: dict[str, str] = {}
    for event_type, data in event_data_schemas().items():
        name = _schema_name(event_type)
        schemas[name] = _object(
            {
                "id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "the loan system's id of the event: a second event with "
                    "the same id is a duplicate and changes nothing",
                },
                "type": {"const": event_type},
                "occurred_at": INSTANT,
                "data": data,
            },
            ["id", "type", "occurred_at", "data"],
            closed=True,
            title=event_type,
        )
        mapping[event_type] = f"#/components/schemas/{name}"
    schemas["Event"] = {
        "description": "A loan-system event (SPEC §4). No text anywhere in it may hold U+0000.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    schemas["BatchResults"] = _object(
        {
            "results": {
                "type": "array",
                "description": "one per event, in the order sent",
                "items": _object(
                    {
                        "id": _nullable({"type": "string"}),
                        "status": {"enum": ["accepted", "duplicate", "invalid"]},
                        "error": _object(
                            {"field": {"type": "string"}, "detail": {"type": "string"}},
                            ["field", "detail"],
                        ),
                    },
                    ["id", "status"],
                ),
            }
        },
        ["results"],
    )
    return schemas


def campaign_body_schema(services: Services) -> dict[str, Any]:
    """The body of POST /v1/campaigns (SPEC §8) as `service/campaigns.parse_campaign` checks
    it; what JSON Schema cannot say is in the descriptions."""
    policy = services.policy
    names = [
        item["name"] for item in template_list(services.renderer) if item["purpose"] == "campaign"
    ]
    template = {"enum": names, "description": "a campaign template (purpose `campaign`)"}
    text_list = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "minLength": 1},
    }
    segment = _object(
        {
            "stages": _nullable(
                text_list | {"items": {"enum": [stage.name for stage in policy.stages]}}
            ),
            "products": _nullable(text_list),
            "locales": _nullable(text_list | {"items": {"enum": list(policy.locales)}}),
            "tags": _nullable(text_list),
            "dpd_min": _nullable({"type": "integer", "minimum": -10_000, "maximum": 100_000}),
            "dpd_max": _nullable({"type": "integer", "minimum": -10_000, "maximum": 100_000}),
            "amount_min": _nullable(AMOUNT),
            "amount_max": _nullable(AMOUNT),
        },
        [],
        closed=True,
        description="every filter given must hold; dpd_min ≤ dpd_max, amount_min ≤ amount_max",
    )
    text = {"type": "string", "pattern": "\\S"}
    variant = _object(
        {
            "name": text | {"maxLength": 100, "not": {"const": campaigns.HOLDOUT_ARM}},
            "template": template,
            "weight": {"type": "number", "exclusiveMinimum": 0, "default": 1},
        },
        ["name", "template"],
        closed=True,
    )
    return _object(
        {
            "name": text | {"maxLength": 200},
            "channel": {"enum": [channel.value for channel in Channel]},
            "template": _nullable(template),
            "variants": _nullable(
                {
                    "type": "array",
                    "minItems": 1,
                    "items": variant,
                    "description": "relative weights; each name once",
                }
            ),
            "segment": segment,
            "start_at": INSTANT,
            "end_at": _nullable(INSTANT | {"description": "after start_at and after now"}),
            "throttle_per_minute": _nullable(
                {"type": "integer", "minimum": 1, "maximum": campaigns.MAX_THROTTLE_PER_MINUTE}
            ),
            "holdout_percent": _nullable(
                {"type": "integer", "minimum": 0, "maximum": campaigns.MAX_HOLDOUT_PERCENT}
            ),
        },
        ["name", "channel", "start_at"],
        closed=True,
        description="Either `template` or `variants`, not both. Every template must have a part "
        "for the channel in every locale the segment reaches (its `locales`, or every locale "
        "the policy serves). 422 names every field at fault and creates nothing.",
    )


def webhook_paths() -> dict[str, Any]:
    """POST /v1/events and /v1/events/batch: ASGI routes of their own (`webhook.py`), which
    FastAPI does not see."""
    unsigned = f"{SIGNATURE_HEADER} is missing, wrong or outside the 300 s window"

    def accepted(description: str) -> dict[str, Any]:
        ref = {"$ref": "#/components/schemas/Accepted"}
        return {"description": description, "content": {"application/json": {"schema": ref}}}

    event = {
        "tags": ["webhooks"],
        "summary": "Receive a loan-system event (signed)",
        "operationId": "receive_event_v1_events_post",
        "security": [{"OutreachSignature": []}],
        "requestBody": {
            "required": True,
            "description": "One event: id, type, occurred_at and data (SPEC §4), at most 1 MiB",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
        },
        "responses": {
            "202": accepted("accepted: stored before this answer, applied moments later"),
            "200": accepted("already accepted (duplicate): nothing happens twice"),
            "401": _problem(401, unsigned),
            "413": _problem(413, "the body is larger than 1 MiB"),
            "422": _problem(422, "the event is malformed: `field` names the offending field"),
            "503": _problem(503, "the event could not be stored durably; retry"),
        },
    }
    events = {
        "type": "array",
        "maxItems": MAX_BATCH_EVENTS,
        "items": {"anyOf": [{"$ref": "#/components/schemas/Event"}, {}]},
    }
    batch = {
        "tags": ["webhooks"],
        "summary": "Receive up to 1,000 loan-system events in one signed body",
        "operationId": "receive_events_v1_events_batch_post",
        "security": [{"OutreachSignature": []}],
        "requestBody": {
            "required": True,
            "description": '`{"events": [event, …]}`, at most 1,000 events and 5 MiB, signed '
            "over the whole body. Each item is checked on its own: one that is not a valid "
            "`Event` is answered `invalid` (naming its field) and not stored, and does not "
            "stop the others.",
            "content": {
                "application/json": {
                    "schema": _object({"events": events}, ["events"]),
                }
            },
        },
        "responses": {
            "200": {
                "description": "each event's result, in the order sent, once every accepted "
                "one is stored",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/BatchResults"}}
                },
            },
            "401": _problem(401, unsigned),
            "413": _problem(413, "the body is larger than 5 MiB"),
            "422": _problem(
                422, "the body is not an object with an `events` list of at most 1,000"
            ),
            "503": _problem(503, "the events could not be stored durably; retry"),
        },
    }
    return {"/v1/events": {"post": event}, "/v1/events/batch": {"post": batch}}


def _problem(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or REASONS[status],
        "content": {"application/json": {"schema": PROBLEM_REF}},
    }


def _calls(dependant: Dependant) -> set[Any]:
    found = {dependant.call}
    for inner in dependant.dependencies:
        found |= _calls(inner)
    return found


def _route_facts(app: FastAPI) -> dict[tuple[str, str], set[Any]]:
    """The dependencies of each documented operation, by (path, method)."""
    facts: dict[tuple[str, str], set[Any]] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant) and route.path_format:
            for method in route.methods or ():
                facts[(route.path_format, method.lower())] = _calls(dependant)
    return facts


def _message_filters(services: Services) -> list[dict[str, Any]]:
    """The message log's filters (GET /v1/messages and its CSV export)."""

    def enum(values: list[str], description: str) -> dict[str, Any]:
        return {"type": "string", "enum": values, "description": description}

    def query(name: str, schema: dict[str, Any], description: str | None = None) -> Any:
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
        parameter["schema"] = schema
        if description:
            parameter["description"] = description
        return parameter

    text = {"type": "string", "minLength": 1}
    return [
        query("borrower_id", text),
        query("loan_id", text),
        query("campaign_id", text),
        {
            "name": "status",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": "one status or a comma list",
            "schema": {
                "type": "array",
                "minItems": 1,
                "items": {"enum": [status.value for status in Status]},
            },
        },
        query("channel", enum([channel.value for channel in Channel], "sms or email")),
        query(
            "stage",
            enum([stage.name for stage in services.policy.stages], "a stage of the policy"),
        ),
        query("reason", enum([reason.value for reason in Reason], "the message's reason")),
        query("purpose", enum([purpose.value for purpose in Purpose], "the message's purpose")),
        query(
            "needs_human",
            {"enum": ["true", "false", "TRUE", "FALSE", "True", "False"]},
            "true: replies waiting for a person",
        ),
        query("since", INSTANT, "send_at ≥ (RFC 3339)"),
        query("until", INSTANT, "send_at < (RFC 3339)"),
        query("q", text, "text search in content and ids"),
    ]


def _complete_operation(
    path: str, method: str, operation: dict[str, Any], dependencies: set[Any]
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses: set[int] = set()
    secured = auth.ops_token in dependencies
    if secured:
        statuses.add(401)
        operation["security"] = [{"OpsToken": []}]
    if dependencies & {auth.admin, auth.admin_actor}:
        statuses.add(403)
        operation["description"] = (
            operation.get("description", "") + "\n\nAdmin only: a viewer's token answers 403."
        ).strip()
    if "{" in path:
        statuses.add(404)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    if dependencies and operation.get("requestBody"):
        statuses.add(400)  # a JSON body that does not parse (FastAPI's answer)
    if not path.startswith(NO_STORE_PATHS):
        statuses.add(503)
    if path.startswith(PUBLIC_PREFIXES) or secured:
        statuses.add(429)  # per address at the public edge, per ops token behind it
    for code in sorted(statuses):
        if str(code) not in responses:
            responses[str(code)] = _problem(code)
    for status, response in responses.items():
        # FastAPI's own validation error shape is not what the API answers (see problems.py)
        if status.startswith(("4", "5")):
            response.setdefault("content", {"application/json": {"schema": PROBLEM_REF}})
            for media in response["content"].values():
                if media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    media["schema"] = PROBLEM_REF


def build(app: FastAPI, services: Services) -> dict[str, Any]:
    """The whole document."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description="Every 4xx and 5xx answer is a `Problem`: `detail` says what is wrong, "
        "naming the field (`field`) where there is one.",
        routes=app.routes,
    )
    paths: dict[str, Any] = {
        **webhook_paths(),
        **schema["paths"],
    }
    facts = _route_facts(app)
    for path, item in paths.items():
        for method, operation in item.items():
            _complete_operation(path, method, operation, facts.get((path, method), set()))
    filters = _message_filters(services)
    listing = paths["/v1/messages"]["get"]
    paged = [p for p in listing["parameters"] if p["name"] in ("limit", "cursor")]
    listing["parameters"] = [*filters, *paged]
    listing["description"] = "A filter given empty is refused (422): leave it out instead."
    for parameter in paged:
        if parameter["name"] == "limit":
            parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
        else:
            parameter["schema"] = {"type": "string", "minLength": 1}
    for parameter in paths["/v1/audit"]["get"]["parameters"]:
        if parameter["name"] in ("since", "until"):
            parameter["schema"] = INSTANT
        elif parameter["name"] == "cursor":
            parameter["schema"] = {"type": "string", "pattern": "^[0-9]{1,18}$"}
    export = paths["/v1/messages/export.csv"]["get"]
    export["parameters"] = filters
    export["responses"]["200"] = {
        "description": "the messages, one CSV row each, streamed",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
    export["responses"].setdefault("422", _problem(422))
    for parameter in paths["/v1/campaigns"]["get"].get("parameters", []):
        if parameter["name"] == "status":
            parameter.update(
                style="form",
                explode=False,
                schema={"type": "array", "minItems": 1, "items": {"enum": list(CAMPAIGN_STATUSES)}},
            )
    paths["/v1/campaigns"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewCampaign"}}},
    }
    _describe_twilio(paths)
    _describe_unsubscribe(paths)
    schema["paths"] = paths

    components = schema.setdefault("components", {})
    models = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        models.pop(unused, None)
    for model in (Accepted, FieldProblem, Problem):
        models[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        models[model.__name__].pop("$defs", None)
    models.update(event_schemas())
    models["NewCampaign"] = campaign_body_schema(services)
    preview = models["PreviewRequest"]["properties"]
    preview["template"] = {"enum": sorted(services.renderer.templates())}
    preview["locale"] = {"enum": sorted(services.renderer.locales())}
    models["PreviewRequest"]["description"] = (
        "The template must have a part for the channel in the locale (422 names what is missing)"
    )
    security = components.setdefault("securitySchemes", {})
    security["OutreachSignature"] = {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": 't=<unix seconds>,v1=<hex HMAC-SHA256(OUTREACH_WEBHOOK_SECRET, "<t>." + '
        "raw body)>; t within 300 s of now; several v1 while the secret is rotated",
    }
    security["TwilioSignature"] = {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "Twilio's signature of OUTREACH_PUBLIC_URL + path and the form fields, "
        "with TWILIO_AUTH_TOKEN",
    }
    return schema


def _describe_twilio(paths: dict[str, Any]) -> None:
    status_path, inbound_path = TWILIO_PATHS
    forms = {
        status_path: _object(
            {
                "MessageSid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "MessageStatus": {
                    "type": "string",
                    "pattern": "^[a-z_]{1,20}$",
                    "description": "queued, sending, sent, delivered, undelivered, failed, …",
                },
                "ErrorCode": {"type": "string", "pattern": "^[0-9]{0,10}$"},
            },
            ["MessageSid", "MessageStatus"],
            description="Twilio's status callback; Twilio's other fields are ignored",
        ),
        inbound_path: _object(
            {
                "From": {"type": "string", "minLength": 1},
                "Body": {"type": "string"},
                "MessageSid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,64}$"},
            },
            ["From"],
            description="an SMS a borrower sent; Twilio's other fields are ignored",
        ),
    }
    for path, form in forms.items():
        operation = paths[path]["post"]
        operation["security"] = [{"TwilioSignature": []}]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": form}},
        }
        responses = operation["responses"]
        for status in (413, 415, 422):
            responses.setdefault(str(status), _problem(status))
        responses["403"] = _problem(403, "X-Twilio-Signature is missing or not valid")
    paths[status_path]["post"]["responses"]["200"] = {
        "description": "applied, or kept to apply once the database is back",
        "content": {
            "application/json": {
                "schema": _object({"status": {"type": "string"}}, ["status"]),
            }
        },
    }
    paths[inbound_path]["post"]["responses"]["200"] = {
        "description": "recorded; replies go out as recorded, gated messages, not as TwiML",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    }


def _describe_unsubscribe(paths: dict[str, Any]) -> None:
    html = {"text/html": {"schema": {"type": "string"}}}
    for operation in paths["/v1/unsubscribe/{token}"].values():
        operation["responses"]["200"] = {"description": "a page for people", "content": html}
        operation["responses"]["404"] = {"description": "the link is not valid", "content": html}
