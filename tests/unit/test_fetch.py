"""The safe fetcher against real sockets: fixture servers on 127.0.0.1, no network mocks.

A "secret" listener stands for an internal service: it counts accepted connections, and
every refused case must leave it at zero.
"""

from __future__ import annotations

import datetime
import gzip
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app.errors import InvalidRequestError, PayloadTooLargeError
from serve_app.images import ImageLimits, decode_image
from serve_app.security.fetch import SafeFetcher
from serve_app.security.ssrf import UrlPolicy
from tests.bad_images import encode, sample
from tests.unit.test_ssrf import INTERNAL_HOSTS

PNG = encode(sample(), "PNG")
CAP = 64 * 1024


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, secret_port: int = 0):
        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        self.secret_port = secret_port
        self.accepts = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.server_names: list[str | None] = []

    def get_request(self):
        self.accepts += 1
        return super().get_request()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # bodies end at close unless Content-Length says more
    server: Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        path = self.path.split("?", 1)[0]
        secret = f"127.0.0.1:{self.server.secret_port}"
        redirects = {
            "/relative/a/b": "../../image.png",
            "/to-secret": f"http://{secret}/x",
            "/to-secret-by-name": f"http://localhost:{self.server.secret_port}/",
            "/to-secret-decimal": f"http://2130706433:{self.server.secret_port}/",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-file": "file:///etc/passwd",
            "/to-credentials": f"http://user:pw@{secret}/",
            "/set-cookie": "/image.png",
        }
        if path.startswith("/hops/"):
            left = int(path.removeprefix("/hops/"))
            if left:
                self.reply(302, headers={"Location": f"/hops/{left - 1}"})
            else:
                self.reply(200, PNG)
        elif path in redirects:
            extra = {"Set-Cookie": "session=abc; Path=/"} if path == "/set-cookie" else {}
            self.reply(307, headers={"Location": redirects[path], **extra})
        elif path == "/image.png":
            self.reply(200, PNG)
        elif path == "/no-location":
            self.reply(302)
        elif path == "/gzip":
            self.reply(200, gzip.compress(PNG), headers={"Content-Encoding": "gzip"})
        else:
            self.body_tricks(path)

    def body_tricks(self, path: str) -> None:
        tricks = {
            # path: (declared Content-Length or None, bytes sent, seconds between chunks)
            "/stream-big": (None, 4 * CAP, 0),
            "/lying-small": (100, 4 * CAP, 0),
            "/claims-huge": (10**12, 10, 0),
            "/claims-more": (1000, 10, 0),
            "/slow-drip": (1000, 60, 0.1),
        }
        if path not in tricks:
            self.reply(404, b"nothing here")
            return
        declared, size, pause = tricks[path]
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if declared is not None:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        try:
            for offset in range(0, size, 1 if pause else 8192):
                self.wfile.write(b"x" * (1 if pause else min(8192, size - offset)))
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the fetcher hung up, as it should
            pass

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "image/png" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def secret() -> Iterator[Server]:
    with running(Server()) as server:
        yield server


@pytest.fixture(scope="module")
def fixture(secret) -> Iterator[Server]:
    with running(Server(secret_port=secret.port)) as server:
        yield server


@pytest.fixture(autouse=True)
def secret_stays_untouched(secret):
    yield
    assert secret.accepts == 0, "a refused fetch reached the secret listener"


def fetcher_for(server: Server, **options) -> SafeFetcher:
    policy = UrlPolicy(
        allow_http=options.pop("allow_http", True),
        allowlist=[f"127.0.0.1:{server.port}", f"localhost:{server.port}"],
        resolver=options.pop("resolver", None) or UrlPolicy().resolver,
    )
    options.setdefault("timeout_s", 3.0)
    options.setdefault("max_bytes", CAP)
    return SafeFetcher(policy, **options)


async def refusal(fetcher: SafeFetcher, url: str, param: str = "image_url"):
    with pytest.raises((InvalidRequestError, PayloadTooLargeError)) as info:
        await fetcher.fetch(url, param=param)
    assert info.value.param == param and info.value.message.startswith(f"{param}: ")
    return info.value


# --- the happy path and pinning -------------------------------------------------------------


async def test_fetches_an_allowlisted_image(fixture):
    fetched = await fetcher_for(fixture).fetch(
        f"http://127.0.0.1:{fixture.port}/image.png", param="image_url"
    )
    assert fetched.data == PNG and fetched.content_type == "image/png"
    assert fetched.final_url == f"http://127.0.0.1:{fixture.port}/image.png"
    assert decode_image(fetched.data, ImageLimits(), param="image_url").size == (64, 48)


async def test_connection_goes_to_the_checked_address_with_the_real_host_header(fixture):
    # The name exists only in our resolver: httpx resolving it itself would fail.
    name = "images.internal.test"
    fetcher = SafeFetcher(
        UrlPolicy(
            allow_http=True,
            allowlist=[f"{name}:{fixture.port}"],
            resolver=lambda host, port: ["127.0.0.1"] if host == name else [],
        ),
        timeout_s=3.0,
        max_bytes=CAP,
    )
    fetched = await fetcher.fetch(f"http://{name}:{fixture.port}/image.png?v=1", param="image")
    assert fetched.data == PNG
    path, headers = fixture.requests[-1]
    assert path == "/image.png?v=1"
    assert headers["Host"] == f"{name}:{fixture.port}"
    assert headers["Accept-Encoding"] == "identity"
    assert "Authorization" not in headers and "Cookie" not in headers


async def test_the_next_address_is_tried_when_one_refuses(fixture):
    closed = socket.socket()
    closed.bind(("127.0.0.2", 0))
    closed.close()  # nothing listens on 127.0.0.2 at the fixture's port
    fetcher = fetcher_for(fixture, resolver=lambda host, port: ["127.0.0.2", "127.0.0.1"])
    fetched = await fetcher.fetch(f"http://localhost:{fixture.port}/image.png", param="image")
    assert fetched.data == PNG


async def test_environment_proxies_are_ignored(fixture, secret, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{secret.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fetched = await fetcher_for(fixture).fetch(
        f"http://localhost:{fixture.port}/image.png", param="image"
    )
    assert fetched.data == PNG


# --- redirects ------------------------------------------------------------------------------


async def test_up_to_three_redirects_are_followed(fixture):
    fetched = await fetcher_for(fixture).fetch(
        f"http://127.0.0.1:{fixture.port}/hops/3", param="image"
    )
    assert fetched.data == PNG and fetched.final_url.endswith("/hops/0")
    relative = await fetcher_for(fixture).fetch(
        f"http://127.0.0.1:{fixture.port}/relative/a/b", param="image"
    )
    assert relative.final_url == f"http://127.0.0.1:{fixture.port}/image.png"


async def test_a_fourth_redirect_is_refused(fixture):
    error = await refusal(fetcher_for(fixture), f"http://127.0.0.1:{fixture.port}/hops/4")
    assert error.code == "image_url_fetch_failed" and "more than 3" in error.message
    one = fetcher_for(fixture, max_redirects=1)
    assert (await refusal(one, f"http://127.0.0.1:{fixture.port}/hops/2")).status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/to-secret",
        "/to-secret-by-name",
        "/to-secret-decimal",
        "/to-metadata",
        "/to-file",
        "/to-credentials",
    ],
)
async def test_every_redirect_is_checked_again(fixture, path):
    error = await refusal(fetcher_for(fixture), f"http://127.0.0.1:{fixture.port}{path}")
    assert error.code == "image_url_forbidden"


async def test_cookies_do_not_follow_redirects(fixture):
    await fetcher_for(fixture).fetch(f"http://127.0.0.1:{fixture.port}/set-cookie", param="i")
    (first, _), (second, headers) = fixture.requests[-2:]
    assert (first, second) == ("/set-cookie", "/image.png")
    assert "Cookie" not in headers


# --- refused before any connection ----------------------------------------------------------


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_internal_addresses_are_refused_before_connecting(fixture, secret, host):
    port = secret.port
    for url in (f"http://{host}:{port}/", f"https://{host}:{port}/"):
        error = await refusal(fetcher_for(fixture), url)
        assert error.code == "image_url_forbidden", url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:{secret}/",
        "file:///etc/passwd",
        "http://user@127.0.0.1:{fixture}/image.png",
        "http://127.0.0.1:{fixture}@127.0.0.1:{secret}/",
    ],
)
async def test_schemes_and_credentials_are_refused(fixture, secret, url):
    url = url.format(secret=secret.port, fixture=fixture.port)
    assert (await refusal(fetcher_for(fixture), url)).code == "image_url_forbidden"


async def test_http_needs_allow_http_even_for_allowlisted_hosts(fixture):
    accepts = fixture.accepts
    strict = fetcher_for(fixture, allow_http=False)
    error = await refusal(strict, f"http://127.0.0.1:{fixture.port}/image.png")
    assert error.code == "image_url_forbidden" and fixture.accepts == accepts


# --- size, time and status ------------------------------------------------------------------


async def test_a_streamed_body_over_the_cap_is_cut(fixture):
    error = await refusal(fetcher_for(fixture), f"http://127.0.0.1:{fixture.port}/stream-big")
    assert (error.status_code, error.code) == (413, "image_too_large")


async def test_a_declared_length_over_the_cap_is_refused_before_reading(fixture):
    started = time.monotonic()
    error = await refusal(fetcher_for(fixture), f"http://127.0.0.1:{fixture.port}/claims-huge")
    assert error.status_code == 413 and time.monotonic() - started < 1.5


async def test_a_small_lying_length_never_lets_more_than_it_through(fixture):
    fetched = await fetcher_for(fixture).fetch(
        f"http://127.0.0.1:{fixture.port}/lying-small", param="image"
    )
    assert len(fetched.data) == 100


async def test_a_body_shorter_than_declared_fails(fixture):
    error = await refusal(fetcher_for(fixture), f"http://127.0.0.1:{fixture.port}/claims-more")
    assert error.code == "image_url_fetch_failed"


async def test_a_slow_drip_hits_the_total_deadline(fixture):
    fetcher = fetcher_for(fixture, timeout_s=0.8)
    started = time.monotonic()
    error = await refusal(fetcher, f"http://127.0.0.1:{fixture.port}/slow-drip")
    elapsed = time.monotonic() - started
    assert error.code == "image_url_fetch_failed" and "longer than 0.8 s" in error.message
    assert 0.7 < elapsed < 2.0  # each byte came well within a read timeout


@pytest.mark.parametrize(
    ("path", "words"),
    [("/missing", "HTTP 404"), ("/no-location", "without a Location"), ("/gzip", "compressed")],
)
async def test_bad_answers_fail_with_a_reason(fixture, path, words):
    error = await refusal(fetcher_for(fixture), f"http://127.0.0.1:{fixture.port}{path}")
    assert error.code == "image_url_fetch_failed" and words in error.message
    assert "nothing here" not in error.message


async def test_connection_refused_and_unresolvable_hosts_fail(fixture):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free_port = probe.getsockname()[1]
    probe.close()
    fetcher = SafeFetcher(
        UrlPolicy(allow_http=True, allowlist=[f"127.0.0.1:{free_port}", "no-such-host.invalid"]),
        timeout_s=3.0,
        max_bytes=CAP,
    )
    error = await refusal(fetcher, f"http://127.0.0.1:{free_port}/")
    assert error.code == "image_url_fetch_failed" and "could not connect" in error.message
    error = await refusal(fetcher, "http://no-such-host.invalid/")
    assert error.code == "image_url_fetch_failed" and "resolved" in error.message


# --- https: pinned to the address, verified against the name ---------------------------------


def self_signed(tmp_path, name: str) -> tuple[str, str]:
    """A certificate for `name` (its own CA), written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@contextmanager
def tls_server(tmp_path, name: str) -> Iterator[tuple[Server, str]]:
    cert, key = self_signed(tmp_path, name)
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, sni, ctx: server.server_names.append(sni)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with running(server):
        yield server, cert


def https_fetcher(server: Server, host: str, cafile: str | None, **policy) -> SafeFetcher:
    return SafeFetcher(
        UrlPolicy(allowlist=[f"{host}:{server.port}"], **policy),
        timeout_s=3.0,
        max_bytes=CAP,
        ssl_context=None if cafile is None else ssl.create_default_context(cafile=cafile),
    )


async def test_https_verifies_the_certificate_against_the_host_name(tmp_path):
    with tls_server(tmp_path, "localhost") as (server, cert):
        fetched = await https_fetcher(server, "localhost", cert).fetch(
            f"https://localhost:{server.port}/image.png", param="image"
        )
        assert fetched.data == PNG
        assert server.server_names == ["localhost"]
        assert server.requests[-1][1]["Host"] == f"localhost:{server.port}"


async def test_https_is_pinned_to_the_checked_address_and_keeps_sni(tmp_path):
    name = "images.internal.test"  # resolvable only through the policy's resolver
    with tls_server(tmp_path, name) as (server, cert):
        fetcher = https_fetcher(server, name, cert, resolver=lambda host, port: ["127.0.0.1"])
        fetched = await fetcher.fetch(f"https://{name}:{server.port}/image.png", param="image")
        assert fetched.data == PNG
        assert server.server_names == [name]


async def test_https_refuses_a_certificate_for_another_name(tmp_path):
    with tls_server(tmp_path, "other.example") as (server, cert):
        fetcher = https_fetcher(server, "localhost", cert)
        error = await refusal(fetcher, f"https://localhost:{server.port}/image.png")
        assert error.code == "image_url_fetch_failed" and "certificate" in error.message
        assert server.requests == []


async def test_https_refuses_an_untrusted_certificate_by_default(tmp_path):
    with tls_server(tmp_path, "localhost") as (server, _):
        error = await refusal(
            https_fetcher(server, "localhost", None), f"https://localhost:{server.port}/"
        )
        assert "certificate" in error.message and server.requests == []
