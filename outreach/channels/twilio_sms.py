"""SMS through Twilio with the real `twilio` client; vendor errors become the project's own.

Twilio's create call has no idempotency key, so the one rule here is: when we cannot tell
whether Twilio got the request, say so (OutcomeUnknown) and let the reconciler ask Twilio
with `find_sent`; never send again on a guess.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import requests  # the twilio client's transport: its exceptions reach us unwrapped
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from outreach.channels.base import (
    ErrorEffect,
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    ensure_still_held,
    run_for_rate,
)
from outreach.channels.rate_limit import RateLimitError, RateLimitTimeout, SegmentRateLimiter
from outreach.channels.twilio_errors import effect_of, recipient_effect
from outreach.domain import Channel
from outreach.errors import ConfigurationError
from outreach.meters import provider_request
from outreach.settings import Settings

STATUS_CALLBACK_PATH = "/v1/providers/twilio/status"

# Twilio accepts a validity period of 1…36000 seconds (10 hours).
MIN_VALIDITY_SECONDS = 1
MAX_VALIDITY_SECONDS = 36_000
# Longest a send waits for a slot from the shared rate limiter before the message is deferred.
DEFAULT_RATE_WAIT_SECONDS = 30.0
# Longest one request to Twilio may take (connect and answer).
REQUEST_TIMEOUT_SECONDS = 10.0
# How many of the recipient's recent messages `find_sent` reads when looking for a lost one.
FIND_SENT_PAGE_SIZE = 50

# Our credentials or account, not the message: no borrower effect, and retrying after the
# operator fixes the configuration can succeed.
ACCOUNT_ERROR_STATUSES = frozenset({401, 403})


def status_callback_url(public_url: str) -> str:
    return public_url.rstrip("/") + STATUS_CALLBACK_PATH


def twilio_signature_valid(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Whether `X-Twilio-Signature` is Twilio's HMAC of `url` and the form `params`.

    `url` must be the URL Twilio was given (the public URL + path, with any query string),
    not the one the request arrived at behind a proxy.
    """
    if not signature or not auth_token:
        return False
    valid: bool = RequestValidator(auth_token).validate(url, dict(params), signature)
    return valid


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _HeaderMemory:
    """Keeps the headers of the last Twilio response per thread.

    The twilio client drops response headers when it raises TwilioRestException, and we need
    `Retry-After` from a 429/503. Senders are shared by worker threads, hence thread-local.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self._local.headers = dict(response.headers)
        return response

    def clear(self) -> None:
        self._local.headers = {}

    def retry_after(self) -> float | None:
        headers: dict[str, str] = getattr(self._local, "headers", {})
        for name, value in headers.items():
            if name.lower() == "retry-after":
                try:
                    return max(0.0, float(value))
                except ValueError:
                    return None  # an HTTP-date, rare from Twilio: the caller's own backoff decides
        return None


class _QuietHttpClient(TwilioHttpClient):  # type: ignore[misc]  # the client has no types
    """The twilio client's transport without its request and response log: it writes a
    dozen INFO lines per request (the recipient's number among them), formatted whether or
    not anyone listens; the dispatch log says what became of each message."""

    def log_request(self, kwargs: dict[str, Any]) -> None:
        return None

    def log_response(self, status_code: int, response: Any) -> None:
        return None


def _environment_once(session: requests.Session, url: str) -> None:
    """Read the proxy and CA settings of the environment (HTTPS_PROXY, NO_PROXY,
    REQUESTS_CA_BUNDLE, …) for Twilio's address once, instead of on every request (a tenth of
    a send's CPU): the session then keeps them and stops looking."""
    found = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(found.get("proxies") or {})
    if found.get("verify") is not None:
        session.verify = found["verify"]
    session.trust_env = False


class TwilioSender:
    """The Sender for Channel.SMS through Twilio's Messages API."""

    channel = Channel.SMS
    # the name its status reports are recorded under (as the status callbacks are)
    provider = "twilio"
    # waits on the network (and its pacing): in runs as long as the pacing allows
    hands_over_at_once = False
    finds_sent = True

    def __init__(
        self,
        settings: Settings,
        *,
        rate_limiter: SegmentRateLimiter | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        rate_wait: float = DEFAULT_RATE_WAIT_SECONDS,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if not settings.twilio_account_sid:
            raise ConfigurationError("TWILIO_ACCOUNT_SID: required for the twilio SMS provider")
        if not settings.twilio_auth_token:
            raise ConfigurationError("TWILIO_AUTH_TOKEN: required for the twilio SMS provider")
        if not (settings.twilio_from or settings.twilio_messaging_service_sid):
            raise ConfigurationError(
                "TWILIO_FROM: set it (or TWILIO_MESSAGING_SERVICE_SID) for the twilio SMS provider"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._from = settings.twilio_from
        self._messaging_service_sid = settings.twilio_messaging_service_sid
        self._status_callback = status_callback_url(settings.public_url)
        self._rate_limiter = rate_limiter
        self.hand_over_run = run_for_rate(rate_limiter.rate_per_second if rate_limiter else None)
        self._rate_wait = rate_wait
        self._clock = clock
        self._headers = _HeaderMemory()
        # One requests session for the sender's life; requests itself never retries here
        # (urllib3 Retry(0, read=False)), which matters: a resent create is a second SMS.
        self._http = _QuietHttpClient(
            timeout=timeout, request_hooks={"response": [self._headers.hook]}
        )
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.reveal(),
            http_client=self._http,
        )
        # settings.py is the one reader of the environment: do not let the client pick
        # TWILIO_EDGE / TWILIO_REGION up behind its back (they would also rewrite the host
        # of a local emulator).
        self._client.edge = None
        self._client.region = None
        if settings.twilio_api_base_url:
            self._client.api.base_url = settings.twilio_api_base_url
        if self._http.session is not None:
            _environment_once(self._http.session, self._client.api.base_url)

    def close(self) -> None:
        if self._http.session is not None:
            self._http.session.close()

    # -- sending ---------------------------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> Receipt:
        if outgoing.channel is not Channel.SMS or not outgoing.body:
            raise ValueError(f"message {outgoing.message_id} is not an SMS with a body")
        self._validity_period(outgoing)  # a window already closed: defer without a slot
        self._wait_for_slot(outgoing)
        # after the wait, the validity period is what is left of the window *now*, and the
        # worker may have lost its lease while it waited
        validity = self._validity_period(outgoing)
        ensure_still_held(outgoing)
        sender: dict[str, Any] = (
            {"messaging_service_sid": self._messaging_service_sid}
            if self._messaging_service_sid
            else {"from_": self._from}
        )
        if validity is not None:
            sender["validity_period"] = validity
        self._headers.clear()
        with provider_request("twilio", outgoing):
            try:
                message = self._client.messages.create(
                    to=outgoing.to,
                    body=outgoing.body,
                    status_callback=self._status_callback,
                    **sender,
                )
            except (TwilioRestException, TwilioServiceException) as error:
                raise self._translate(error) from error
            except requests.exceptions.RequestException as error:
                raise _transport_error(error) from error
        return Receipt(provider_id=str(message.sid), status=str(message.status or "queued"))

    def _wait_for_slot(self, outgoing: Outgoing) -> None:
        if self._rate_limiter is None:
            return
        wait = self._rate_wait
        if outgoing.deliver_by is not None:
            # waiting past the window is pointless: it would only be deferred afterwards
            wait = min(wait, (outgoing.deliver_by - self._clock()).total_seconds())
        try:
            self._rate_limiter.acquire(max(1, outgoing.segments), timeout=max(0.0, wait))
        except RateLimitTimeout as busy:
            raise ProviderUnavailable("rate_limited", str(busy), busy.retry_after) from busy
        except RateLimitError as error:
            raise ProviderUnavailable("rate_limiter_unavailable", str(error)) from error

    def _validity_period(self, outgoing: Outgoing) -> int | None:
        """Seconds Twilio may keep the message queued: never past the borrower's window."""
        if outgoing.deliver_by is None:
            return None
        left = math.floor((outgoing.deliver_by - self._clock()).total_seconds())
        if left < MIN_VALIDITY_SECONDS:
            # Twilio cannot be told "deliver within 0 s"; the message waits for the next window
            raise ProviderUnavailable(
                "window_closed",
                f"the allowed window closed at {outgoing.deliver_by.isoformat()}; not sent",
            )
        return min(left, MAX_VALIDITY_SECONDS)

    def _translate(
        self, error: TwilioRestException | TwilioServiceException
    ) -> ProviderRejected | ProviderUnavailable:
        status = int(error.status or 0)
        code = int(error.code) if error.code is not None else status
        detail = str(getattr(error, "msg", None) or getattr(error, "detail", None) or "")
        # the client prefixes Twilio's message with its own "Unable to create record: "
        detail = detail.split(": ", 1)[-1] if detail.startswith("Unable to") else detail
        detail = detail or str(getattr(error, "title", "")) or f"HTTP {status}"
        effect = effect_of(code)
        if effect is not None and effect is not ErrorEffect.RETRY:
            return ProviderRejected(str(code), detail, recipient_effect(code))
        if (
            status == 429
            or status >= 500
            or effect is ErrorEffect.RETRY
            or status in ACCOUNT_ERROR_STATUSES
        ):
            return ProviderUnavailable(str(code), detail, self._headers.retry_after())
        # Any other 4xx: Twilio understood and refused this request; sending it again as it is
        # cannot help, and the code says nothing known about the recipient.
        return ProviderRejected(str(code), detail, None)

    # -- reconciliation --------------------------------------------------------------------------

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        """The Twilio message with this recipient and body created since `since`, if any.

        Twilio's DateSent filter is a date (and a message still queued has no date_sent), so
        the filter is only a first cut; the creation time and body are compared here.
        """
        since_utc = since.astimezone(dt.UTC)
        first_day = dt.datetime.combine(since_utc.date(), dt.time(), tzinfo=dt.UTC)
        try:
            candidates = self._client.messages.list(
                to=outgoing.to, date_sent_after=first_day, limit=FIND_SENT_PAGE_SIZE
            )
            found = _matching(candidates, outgoing, since_utc)
            if found is None:
                # a message Twilio still holds queued has no date_sent: look at the newest ones
                recent = self._client.messages.list(to=outgoing.to, limit=FIND_SENT_PAGE_SIZE)
                found = _matching(recent, outgoing, since_utc)
        except (TwilioRestException, TwilioServiceException, TwilioException) as error:
            raise ProviderUnavailable("lookup_failed", str(error)) from error
        except requests.exceptions.RequestException as error:
            raise ProviderUnavailable("lookup_failed", type(error).__name__) from error
        if found is None:
            return None
        code = getattr(found, "error_code", None)
        return Receipt(
            provider_id=str(found.sid),
            status=str(found.status or "queued"),
            error_code=str(code) if code is not None else None,
        )


def _matching(messages: list[Any], outgoing: Outgoing, since: dt.datetime) -> Any:
    for message in messages:
        created = message.date_created or message.date_sent
        if created is not None and created < since:
            continue
        if getattr(message, "direction", None) not in (None, "outbound-api"):
            continue
        if message.body == outgoing.body:
            return message
    return None


def _transport_error(error: Exception) -> ProviderUnavailable | OutcomeUnknown:
    """Sort transport failures by whether Twilio can have received the request."""
    if isinstance(error, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return ProviderUnavailable("connect_failed", type(error).__name__)
    if isinstance(error, requests.exceptions.ProxyError):
        return ProviderUnavailable("connect_failed", type(error).__name__)
    if isinstance(error, requests.exceptions.ConnectionError) and _never_connected(error):
        return ProviderUnavailable("connect_failed", "connection refused or host not found")
    # A read timeout, a reset or a closed connection after the request went out: Twilio may
    # have created the message.
    return OutcomeUnknown(
        f"no answer from Twilio after sending ({type(error).__name__}); "
        "the message may exist and will be reconciled, not resent"
    )


def _never_connected(error: Exception) -> bool:
    # requests wraps urllib3's MaxRetryError whose `reason` is the failure of the connection
    # attempt itself (refused, DNS) when the request never left this machine.
    for argument in error.args:
        reason = getattr(argument, "reason", None)
        if isinstance(reason, NewConnectionError):
            return True
    return False
