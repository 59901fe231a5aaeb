"""Send one HTTP request to an address `UrlPolicy.check` already approved.

httpx would resolve the host name again (and DNS may answer differently the second time),
so the request goes to `scheme://<ip>:<port>/path` instead, with the `Host` header, TLS
SNI and certificate check using the real host name (httpcore's `sni_hostname` extension
becomes `server_hostname`, which drives both). Clients never follow redirects and ignore
proxies and netrc from the environment; callers check each redirect target themselves.
"""

from __future__ import annotations

import ssl

import httpx

from serve_app.security.ssrf import CheckedUrl

ADDRESSES_TRIED = 4


def pinned_client(ssl_context: ssl.SSLContext, timeout_s: float) -> httpx.AsyncClient:
    """A fresh client: no connection, cookie or credential carries over between uses."""
    return httpx.AsyncClient(
        verify=ssl_context,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
    )


async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    checked: CheckedUrl,
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    """The streamed response from the first checked address that accepts the connection.

    Raises the last `httpx.ConnectError` when none does; other httpx errors (timeouts,
    broken exchanges) propagate at once, as retrying another address would not help."""
    extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
    base = httpx.URL(checked.url)
    failure: httpx.ConnectError | None = None
    for address in checked.addresses[:ADDRESSES_TRIED]:
        request = client.build_request(
            method,
            base.copy_with(host=str(address)),
            headers={**headers, "Host": checked.host_header},
            content=content,
            extensions=extensions,
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:  # try the host's next address
            failure = exc
    if failure is None:
        raise httpx.ConnectError("the URL has no checked address to connect to")
    raise failure


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in exc's chain of causes (e.g. a certificate failure under a
    ConnectError)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_failure(exc: BaseException) -> bool:
    return _caused_by(exc, ssl.SSLCertVerificationError)
