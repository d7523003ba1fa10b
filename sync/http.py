"""The one HTTP client every connector uses: timeouts, bounded retries, Retry-After, quiet logs.

Errors leave as `ConnectorError`: retryable for timeouts, connection failures, 429 and 5xx;
not retryable for 401/403 and the other 4xx (with the vendor's message, truncated).
Logs carry method, URL path, status and milliseconds only: never headers, auth, query or bodies.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from sync.base import ConnectorError

log = logging.getLogger(__name__)

# Methods that may be sent twice without a second effect (RFC 9110 section 9.2.2).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_MESSAGE_KEYS = ("message", "Message", "detail", "Detail", "error_description", "error", "Error")
_MAX_MESSAGE = 300
# A vendor's Retry-After longer than this is read as this (a write-back is tried again within hours,
# whatever a confused server says); the client's own waits are capped lower still (max_backoff).
RETRY_AFTER_CAP = 6 * 3600.0


class HttpClient:
    """Sends requests with retries; one instance may serve one connector for its lifetime."""

    def __init__(self, *, timeout: float, max_retries: int = 4, max_backoff: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, session: requests.Session | None = None,
                 backoff_base: float = 1.0) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self.backoff_base = backoff_base
        self._sleep = sleep
        self._session = session or requests.Session()

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                params: Mapping[str, Any] | None = None, json: Any = None, data: Any = None,
                auth: Any = None, idempotent: bool | None = None) -> requests.Response:
        """Send one request, retrying transient failures; returns the first 1xx-3xx response.

        `idempotent` defaults to True for GET/HEAD/OPTIONS/PUT/DELETE and for any request that
        carries an `Idempotency-Key` header. A request that is not idempotent is retried only
        when the server cannot have acted on it (429, or no connection made); after a timeout,
        a dropped connection or a 5xx it raises a retryable ConnectorError at once, so the caller
        can look up what happened before trying again instead of creating a duplicate.

        Raises ConnectorError: retryable=True with `status`/`retry_after` when retries run out,
        retryable=False for 401/403 (no retry) and other 4xx (vendor message included).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS or any(
                k.lower() == "idempotency-key" for k in (headers or {}))
        path = urlsplit(url).path
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                resp = self._session.request(method, url, headers=headers, params=params, json=json,
                                             data=data, auth=auth, timeout=self.timeout)
            except requests.RequestException as exc:
                ms = _ms_since(started)
                log.debug("%s %s -> %s in %d ms (attempt %d)", method, path, type(exc).__name__, ms,
                          attempt + 1)
                if not (idempotent or _never_sent(exc)) or attempt >= self.max_retries:
                    raise ConnectorError(f"{method} {path}: {type(exc).__name__} after {attempt + 1} "
                                         f"attempt(s)", retryable=True) from exc
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue

            status = resp.status_code
            log.debug("%s %s -> %d in %d ms (attempt %d)", method, path, status, _ms_since(started),
                      attempt + 1)
            if status < 400:
                return resp
            message = vendor_message(resp)
            if status in (401, 403):
                raise ConnectorError(f"{method} {path}: HTTP {status} (check API keys and the "
                                     f"member's security role): {message}", retryable=False,
                                     status=status)
            if status != 429 and status != 408 and status < 500:
                raise ConnectorError(f"{method} {path}: HTTP {status}: {message}", retryable=False,
                                     status=status)
            retry_after = _retry_after(resp) if status in (429, 503) else None
            safe_to_repeat = idempotent or status == 429
            if not safe_to_repeat or attempt >= self.max_retries:
                raise ConnectorError(f"{method} {path}: HTTP {status} after {attempt + 1} attempt(s): "
                                     f"{message}", retryable=True, status=status, retry_after=retry_after)
            wait = self._backoff(attempt) if retry_after is None else min(retry_after, self.max_backoff)
            self._sleep(wait)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff_base * (2 ** attempt))


def vendor_message(resp: requests.Response) -> str:
    """The vendor's own error text from a JSON or text body, on one line, at most ~300 chars."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    text = _find_message(body) if body is not None else None
    if text is None:
        text = resp.text if body is None else json.dumps(body)
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _find_message(body: Any, depth: int = 0) -> str | None:
    # Vendors nest it differently: CW {"message"}, Stripe {"error":{"message"}},
    # QBO {"Fault":{"Error":[{"Message","Detail"}]}}, Xero {"Message"}.
    if depth > 3:
        return None
    if isinstance(body, list):
        return next((m for m in (_find_message(b, depth + 1) for b in body) if m), None)
    if not isinstance(body, dict):
        return None
    for key in _MESSAGE_KEYS:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value
    for value in body.values():
        if isinstance(value, dict | list):
            found = _find_message(value, depth + 1)
            if found:
                return found
    return None


def _retry_after(resp: requests.Response, *, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After in seconds (RFC 9110: delay-seconds or an HTTP-date), at most RETRY_AFTER_CAP.

    A value that is neither, or negative, or not finite, is no answer (None: the usual backoff
    applies), never "retry at once" or "wait forever".
    """
    raw = (resp.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # asctime and "-0000" carry no zone, and HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now()
        seconds = max(0.0, seconds)  # a date already past: the server is ready again
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP)


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (so repeating it is always safe)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        inner = exc.args[0]
        return isinstance(inner, MaxRetryError) and isinstance(inner.reason, NewConnectionError)
    return False


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
