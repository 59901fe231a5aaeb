"""The Gateway's door: who is calling (API key), may they use this route (scope), and
are they within their tenant's quotas. Raises `Refusal` with the answer to give."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from serve_app import environment
from serve_app.config import AppConfig, AuthConfig, RateLimitConfig
from serve_app.db import is_outage, outage_summary
from serve_app.errors import (
    AuthenticationError,
    DatabaseUnavailableError,
    ErrorCode,
    PermissionDeniedError,
    RateLimitError,
    ServiceError,
    ServiceUnavailableError,
)
from serve_app.observability.metrics import ServiceMetrics
from serve_app.security.authenticator import Authenticator
from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher, Principal, pepper_from_environment
from serve_app.security.loopback import is_loopback
from serve_app.security.rate_limit import (
    Admission,
    Bucket,
    LimiterBackend,
    LocalLimiter,
    RedisLimiter,
    rate_limit_headers,
)
from serve_app.security.scopes import ANY_KEY, PUBLIC, Access

logger = logging.getLogger(__name__)

ANONYMOUS_TENANT = "default"
BEARER_CHALLENGE = 'Bearer realm="image-service"'
# A slot outlives its request's deadline by this much before it frees itself.
SLOT_MARGIN_S = 30.0
BACKEND_ERROR_LOG_EVERY_S = 30.0


class Refusal(Exception):
    """An answer the door gives instead of the route: an error plus headers, and whose
    key it was when the key was valid (so the access log names the tenant refused)."""

    def __init__(
        self,
        error: ServiceError,
        headers: dict[str, str] | None = None,
        principal: Principal | None = None,
    ):
        super().__init__(error.message)
        self.error = error
        self.headers = headers or {}
        self.principal = principal


@dataclass
class Pass:
    """A request let through: its principal and the quota slot to give back."""

    principal: Principal | None
    tenant: str
    headers: dict[str, str] = field(default_factory=dict)
    slots_key: str | None = None
    slot: str | None = None


def presented_key(headers: dict[str, str]) -> str | None:
    """`Authorization: Bearer <key>` (what the openai SDK sends) or `x-api-key: <key>`."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(
                AuthenticationError(
                    "use 'Authorization: Bearer <key>' or the x-api-key header",
                    code=ErrorCode.INVALID_AUTHORIZATION_HEADER,
                ),
                {"WWW-Authenticate": BEARER_CHALLENGE},
            )
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


class Guard:
    def __init__(
        self,
        auth: AuthConfig,
        limits: RateLimitConfig,
        authenticator: Authenticator | None,
        limiter: LimiterBackend | None,
        metrics: ServiceMetrics | None = None,
    ):
        self.auth = auth
        self.limits = limits
        self.authenticator = authenticator
        self.limiter = limiter
        self.metrics = metrics or ServiceMetrics()
        self._last_backend_error_log = -BACKEND_ERROR_LOG_EVERY_S

    async def admit(
        self, access: Access, headers: dict[str, str], server_host: str | None, deadline_s: float
    ) -> Pass | None:
        """None for public routes; a Pass, or a Refusal raised, for the others."""
        if access == PUBLIC:
            return None
        principal = await self._principal(access, headers, server_host)
        tenant = principal.tenant if principal is not None else ANONYMOUS_TENANT
        granted = Pass(principal, tenant)
        if self.limiter is not None and self.limits.enabled:
            await self._within_quotas(granted, deadline_s)
        return granted

    async def release(self, granted: Pass) -> None:
        if granted.slot is None or self.limiter is None:
            return
        try:
            await self.limiter.release(granted.slots_key, granted.slot)
        except Exception as error:  # the slot expires on its own
            self._backend_failed(error)

    async def close(self) -> None:
        if self.limiter is not None:
            await self.limiter.close()

    def dependency_checks(self) -> list[tuple[str, Callable[[], Awaitable[None]], bool]]:
        """(name, check, required) for what the door depends on, for readiness: the key
        store, and Redis where rate limits are shared (required when its failure refuses
        requests, `on_backend_error: deny`)."""
        checks: list[tuple[str, Callable[[], Awaitable[None]], bool]] = []
        if self.authenticator is not None:
            store = self.authenticator.store
            checks.append(("key_store", lambda: asyncio.to_thread(store.ping), True))
        if isinstance(self.limiter, RedisLimiter) and self.limits.enabled:
            required = self.limits.on_backend_error == "deny"
            checks.append(("redis", self.limiter.ping, required))
        return checks

    # --- who ---------------------------------------------------------------------------

    async def _principal(
        self, access: Access, headers: dict[str, str], server_host: str | None
    ) -> Principal | None:
        if self.authenticator is None:
            # Keys are off: serve only what reached the proxy on a loopback address.
            if not is_loopback(server_host):
                raise Refusal(
                    PermissionDeniedError(
                        "API keys are off on this server; it answers on loopback only",
                        code=ErrorCode.ANONYMOUS_ACCESS_REFUSED,
                    )
                )
            return None
        key = presented_key(headers)
        challenge = {"WWW-Authenticate": BEARER_CHALLENGE}
        if key is None:
            raise Refusal(
                AuthenticationError(
                    "an API key is required: send 'Authorization: Bearer <key>'",
                    code=ErrorCode.MISSING_API_KEY,
                ),
                challenge,
            )
        try:
            principal = await self.authenticator.principal_for(key)
        except DBAPIError as error:
            if not is_outage(error):
                raise
            # A key it cannot look up is neither valid nor invalid: ask the caller to retry.
            self.metrics.dependency_failed("key_store")
            logger.warning("API keys cannot be checked: %s", outage_summary(error))
            raise Refusal(DatabaseUnavailableError()) from None
        if principal is None:
            raise Refusal(
                AuthenticationError(
                    "the API key is invalid, revoked or expired", code=ErrorCode.INVALID_API_KEY
                ),
                {"WWW-Authenticate": BEARER_CHALLENGE + ', error="invalid_token"'},
            )
        if access != ANY_KEY and not principal.has_scope(access):
            raise Refusal(
                PermissionDeniedError(
                    f"this API key lacks the {access!r} scope this route needs",
                    code=ErrorCode.INSUFFICIENT_SCOPE,
                ),
                {
                    "WWW-Authenticate": BEARER_CHALLENGE
                    + f', error="insufficient_scope", scope="{access}"'
                },
                principal,
            )
        return principal

    # --- how much -----------------------------------------------------------------------

    async def _within_quotas(self, granted: Pass, deadline_s: float) -> None:
        per_minute, max_concurrent = self.limits.limits_for(granted.tenant)
        prefix = f"{self.limits.key_prefix}:{{{granted.tenant}}}"
        buckets = [Bucket("tenant", f"{prefix}:rate", per_minute)]
        if self.limits.per_key_requests_per_minute and granted.principal is not None:
            buckets.append(
                Bucket(
                    "key",
                    f"{prefix}:key:{granted.principal.key_prefix}",
                    self.limits.per_key_requests_per_minute,
                )
            )
        slots_key = f"{prefix}:inflight"
        try:
            admission = await self.limiter.admit(
                slots_key, max_concurrent, deadline_s + SLOT_MARGIN_S, buckets
            )
        except Exception as error:  # Redis down or slow: the configured policy decides
            self._backend_failed(error)
            if self.limits.on_backend_error == "deny":
                raise Refusal(
                    ServiceUnavailableError(
                        "rate limiting is unavailable; retry shortly",
                        code=ErrorCode.RATE_LIMITER_UNAVAILABLE,
                    ),
                    {"Retry-After": "1"},
                    granted.principal,
                ) from None
            return
        granted.headers = rate_limit_headers(admission.buckets)
        if admission.status != "admitted":
            raise Refusal(
                self._limit_error(admission),
                self._limit_headers(admission, granted),
                granted.principal,
            )
        granted.slots_key, granted.slot = slots_key, admission.slot

    @staticmethod
    def _limit_error(admission: Admission) -> RateLimitError:
        if admission.status == "concurrency_limited":
            return RateLimitError(
                "too many requests in flight for this tenant; retry when one finishes",
                code=ErrorCode.CONCURRENCY_LIMIT_EXCEEDED,
            )
        return RateLimitError(
            "request rate limit reached for this tenant", code=ErrorCode.RATE_LIMIT_EXCEEDED
        )

    @staticmethod
    def _limit_headers(admission: Admission, granted: Pass) -> dict[str, str]:
        return {**granted.headers, "Retry-After": str(admission.retry_after_s)}

    def _backend_failed(self, error: Exception) -> None:
        """Counted every time; logged at most every BACKEND_ERROR_LOG_EVERY_S."""
        self.metrics.dependency_failed("rate_limiter")
        now = time.monotonic()
        if now - self._last_backend_error_log >= BACKEND_ERROR_LOG_EVERY_S:
            self._last_backend_error_log = now
            logger.warning(
                "rate limiter backend failed (%s: %s); policy on_backend_error=%s: %s",
                type(error).__name__,
                error,
                self.limits.on_backend_error,
                "requests pass unlimited"
                if self.limits.on_backend_error == "allow"
                else "requests get 503",
            )


def build_guard(config: AppConfig, metrics: ServiceMetrics | None = None) -> Guard:
    """The door for this config: opens the key store and the limiter it names."""
    authenticator = None
    if config.auth.enabled:
        hasher = KeyHasher(pepper_from_environment(config.auth.pepper_env))
        store = KeyStore.open(environment.key_database_url(config.auth.database_url), hasher)
        authenticator = Authenticator(store, config.auth.cache_ttl_s, config.auth.last_used_every_s)
    limiter: LimiterBackend | None = None
    if config.rate_limits.enabled:
        limits = config.rate_limits
        redis_url = environment.redis_url(limits.redis_url)
        limiter = RedisLimiter(redis_url, limits.redis_timeout_s) if redis_url else LocalLimiter()
    return Guard(config.auth, config.rate_limits, authenticator, limiter, metrics)
