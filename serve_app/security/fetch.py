"""Fetch an image URL without letting the client steer the service into its own network.

Every hop (the URL and each redirect, at most `max_redirects`) goes through
`UrlPolicy.check`, and the connection is made to the address that was checked
(`serve_app.security.pinned`). Each hop uses a fresh client, so no connection, cookie or
credential carries over; proxies and netrc from the environment are ignored.
One deadline covers the whole fetch; the body is streamed and cut at `max_bytes`,
whatever Content-Length says.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from serve_app.errors import ErrorCode, InvalidRequestError, PayloadTooLargeError
from serve_app.security.pinned import pinned_client, send_pinned, tls_failure
from serve_app.security.ssrf import CheckedUrl, UrlPolicy

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ACCEPT = "image/png, image/jpeg, image/webp;q=0.9, */*;q=0.1"
# The policy's codes, as the image endpoints name them.
_POLICY_CODES = {
    ErrorCode.URL_INVALID: ErrorCode.IMAGE_URL_INVALID,
    ErrorCode.URL_FORBIDDEN: ErrorCode.IMAGE_URL_FORBIDDEN,
    ErrorCode.URL_UNRESOLVABLE: ErrorCode.IMAGE_URL_FETCH_FAILED,
}


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str | None
    final_url: str


class SafeFetcher:
    """GET an image URL under `policy`; errors are 400/413 `ServiceError`s with `param`."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 3,
        user_agent: str = "image-serving/0.1 (image URL fetcher)",
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        # Built once: loading the CA bundle for every hop would cost more than the hop.
        self.ssl_context = ssl_context or httpx.create_ssl_context()

    async def fetch(self, url: str, *, param: str) -> FetchedImage:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url, param)
        except TimeoutError:
            raise _failed(
                param, f"fetching the URL took longer than {self.timeout_s:g} s"
            ) from None

    async def _follow(self, url: str, param: str) -> FetchedImage:
        for _ in range(self.max_redirects + 1):
            checked = await self._check(url, param)
            result = await self._get(checked, param)
            if isinstance(result, FetchedImage):
                return result
            url = result
        raise _failed(param, f"the URL redirected more than {self.max_redirects} times")

    async def _check(self, url: str, param: str) -> CheckedUrl:
        try:
            return await self.policy.check_async(url, param=param)
        except InvalidRequestError as exc:
            code = _POLICY_CODES.get(exc.code, exc.code) if exc.code else None
            raise InvalidRequestError(exc.message, code=code, param=param) from None

    async def _get(self, checked: CheckedUrl, param: str) -> FetchedImage | str:
        """One hop: the image, or the next URL to check."""
        async with pinned_client(self.ssl_context, self.timeout_s) as client:
            response = await self._send(client, checked, param)
            try:
                status = response.status_code
                if status in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise _failed(param, f"the URL answered HTTP {status} without a Location")
                    return urljoin(checked.url, location)
                if not 200 <= status < 300:
                    raise _failed(param, f"the URL answered HTTP {status}")
                data = await self._read_capped(response, param)
                return FetchedImage(data, response.headers.get("content-type"), checked.url)
            finally:
                await response.aclose()

    async def _send(
        self, client: httpx.AsyncClient, checked: CheckedUrl, param: str
    ) -> httpx.Response:
        headers = {
            "User-Agent": self.user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": "identity",
        }
        try:
            return await send_pinned(client, "GET", checked, headers)
        except httpx.ConnectError as exc:
            if tls_failure(exc):
                raise _failed(param, "the URL's TLS certificate did not verify") from None
            raise _failed(param, "could not connect to the URL's host") from None
        except httpx.TimeoutException:
            raise _failed(param, "the URL's server did not answer in time") from None
        except httpx.HTTPError:
            raise _failed(param, "the URL's server broke off the exchange") from None

    async def _read_capped(self, response: httpx.Response, param: str) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(param, self.max_bytes)
        if response.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
            # We asked for identity; decompressing would let a small body expand past the cap.
            raise _failed(param, "the URL's server sent a compressed body")
        chunks: list[bytes] = []
        total = 0
        try:
            async for chunk in response.aiter_raw():
                total += len(chunk)
                if total > self.max_bytes:
                    raise _too_large(param, self.max_bytes)
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise _failed(param, "the URL's server did not answer in time") from None
        except httpx.HTTPError:
            raise _failed(param, "the URL's server broke off the exchange") from None
        return b"".join(chunks)


def _failed(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param}: {message}", code=ErrorCode.IMAGE_URL_FETCH_FAILED, param=param
    )


def _too_large(param: str, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{param}: the image at the URL is larger than {max_bytes} bytes",
        code=ErrorCode.IMAGE_TOO_LARGE,
        param=param,
    )
