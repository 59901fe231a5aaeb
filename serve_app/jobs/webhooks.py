"""Webhooks signed per the Standard Webhooks spec, and a sender that cannot be steered
into the service's own network.

Signing: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed
with the bytes behind a `whsec_<base64>` secret; several secrets (rotation) give several
space-separated signatures, and the receiver accepts any one that matches.

Delivery: one POST per call. The caller (the job runner) owns the schedule: it keeps the
message id and body of a message unchanged across attempts, asks `retry_delay` when to
try again, and stops on `retry=False` or `disable=True`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import random
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from secrets import token_bytes

import httpx

from serve_app.config import WebhookConfig
from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.security.pinned import pinned_client, send_pinned, tls_failure
from serve_app.security.ssrf import UrlPolicy

SECRET_PREFIX = "whsec_"
# The spec: symmetric secrets are 24 to 64 random bytes.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
# The id is part of the signed text: no "." (it delimits the parts) and header-safe.
MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# After the first attempt fails: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h (the spec's example).
DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)
USER_AGENT = "image-serving-webhooks/0.1"
CALLBACK_PARAM = "callback_url"


def new_secret(num_bytes: int = 32) -> str:
    """A fresh `whsec_` secret to hand to the endpoint's owner."""
    if not MIN_SECRET_BYTES <= num_bytes <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(token_bytes(num_bytes)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key behind a `whsec_` secret. Errors never repeat the secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one secret: `v1,<base64 HMAC-SHA256>`."""
    if not MESSAGE_ID.fullmatch(msg_id):
        raise ValueError("a message id is 1-128 characters of [A-Za-z0-9_-]")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("the timestamp is whole seconds since the epoch")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_all(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret, space-separated: during rotation old and new both verify."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_all(secrets, msg_id, timestamp, body),
    }


def retry_delay(
    attempt: int,
    schedule_s: Sequence[float] = DEFAULT_RETRY_SCHEDULE_S,
    rng: random.Random | None = None,
    jitter: float = 0.2,
) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (1 = the first try), ±jitter;
    None once the schedule is used up: the message has failed for good."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    if attempt > len(schedule_s):
        return None
    spread = (rng or random).uniform(1 - jitter, 1 + jitter)
    return schedule_s[attempt - 1] * spread


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: bool
    status_code: int | None
    # Short and safe to store or show: never the URL, a header or a secret.
    error: str | None
    # Try again later (per `retry_delay`)?
    retry: bool
    # The endpoint asked to stop (410 Gone): no more messages to it.
    disable: bool
    # The receiver's Retry-After in seconds, when it sent a usable one.
    retry_after_s: float | None = None


def _failure(error: str, status: int | None = None, *, retry: bool = True) -> DeliveryOutcome:
    return DeliveryOutcome(False, status, error, retry=retry, disable=False)


def callback_policy(webhooks: WebhookConfig) -> UrlPolicy:
    """Where callbacks may go: the image URLs' SSRF rules, with the webhooks' own exemptions."""
    return UrlPolicy(allow_http=webhooks.allow_http, allowlist=webhooks.allowed_hosts)


class WebhookSender:
    """POSTs signed messages to callback URLs under `policy` (https only unless allow_http;
    every resolved address public unless the host[:port] is allowlisted), connected to the
    checked address, never following redirects, reading at most `max_response_bytes`."""

    def __init__(
        self,
        policy: UrlPolicy,
        timeout_s: float = 15.0,
        max_response_bytes: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.ssl_context = ssl_context or httpx.create_ssl_context()

    async def deliver(
        self, url: str, msg_id: str, timestamp: int, body: bytes, secrets: list[str]
    ) -> DeliveryOutcome:
        """One attempt. `timeout_s` bounds checking the URL, connecting and getting the
        status line; reading the reply gets as long again and cannot change the outcome."""
        headers = webhook_headers(msg_id, timestamp, body, secrets)
        async with pinned_client(self.ssl_context, self.timeout_s) as client:
            try:
                async with asyncio.timeout(self.timeout_s):
                    sent = await self._send(client, url, headers, body)
            except TimeoutError:
                return _failure(f"no answer within {self.timeout_s:g} s")
            if isinstance(sent, DeliveryOutcome):
                return sent
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._drain(sent)
            except TimeoutError:
                pass
            finally:
                await sent.aclose()
            return _outcome(sent)

    async def _send(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes
    ) -> httpx.Response | DeliveryOutcome:
        try:
            checked = await self.policy.check_async(url, param=CALLBACK_PARAM)
        except InvalidRequestError as exc:
            # DNS may recover; a refused or malformed URL will not.
            reason = exc.message.removeprefix(f"{CALLBACK_PARAM}: ")
            return _failure(
                f"callback URL refused: {reason}", retry=exc.code == ErrorCode.URL_UNRESOLVABLE
            )
        try:
            return await send_pinned(client, "POST", checked, headers, content=body)
        except httpx.ConnectError as exc:
            if tls_failure(exc):
                return _failure("the receiver's TLS certificate did not verify")
            return _failure("could not connect to the receiver")
        except httpx.TimeoutException:
            return _failure(f"no answer within {self.timeout_s:g} s")
        except httpx.HTTPError:
            return _failure("the receiver broke off the exchange")

    async def _drain(self, response: httpx.Response) -> None:
        """Read the reply up to the cap, so a well-behaved receiver sees a clean close."""
        received = 0
        try:
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received >= self.max_response_bytes:
                    break
        except httpx.HTTPError:
            pass  # the status line already decided the outcome


def _outcome(response: httpx.Response) -> DeliveryOutcome:
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryOutcome(True, status, None, retry=False, disable=False)
    if status == 410:
        return DeliveryOutcome(False, status, "HTTP 410: the receiver is gone", False, True)
    if 300 <= status < 400:
        # The spec: a redirect is a failure; the endpoint's owner must update the URL.
        return _failure(f"HTTP {status}: redirects are not followed", status)
    retry_after = _retry_after_s(response.headers.get("retry-after", ""))
    return replace(_failure(f"HTTP {status}", status), retry_after_s=retry_after)


def _retry_after_s(value: str) -> float | None:
    """Retry-After in delta-seconds, capped at a day; HTTP dates are ignored."""
    value = value.strip()
    if not value.isdigit():
        return None
    return float(min(int(value), 24 * 3600))
