"""Standard Webhooks signing and the sender, against real sockets on 127.0.0.1.

Signatures are checked with the `standardwebhooks` package, not with our own code. The
receiver verifies every delivery itself and answers 401 when a signature does not match;
a second "internal" listener counts accepted connections, and every refused case must
leave it at zero.
"""

from __future__ import annotations

import datetime
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from serve_app.jobs.webhooks import (
    DEFAULT_RETRY_SCHEDULE_S,
    DeliveryOutcome,
    WebhookSender,
    new_secret,
    retry_delay,
    secret_key,
    sign,
    sign_all,
)
from serve_app.security.ssrf import UrlPolicy

BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_1"}}, separators=(",", ":"))
BODY_BYTES = BODY.encode()
ENDLESS_LIMIT = 64 << 20


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, secrets: list[str] | None = None):
        super().__init__(("127.0.0.1", 0), Receiver)
        self.port = self.server_address[1]
        self.secrets = secrets or []
        self.accepts = 0
        self.deliveries: list[tuple[str, dict[str, str], bytes, bool]] = []
        self.hung_up = threading.Event()
        self.redirect_to = ""

    def get_request(self):
        self.accepts += 1
        return super().get_request()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def verifies(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return True
            except WebhookVerificationError:
                continue
        return False


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # a body without Content-Length ends at close
    server: Listener

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = dict(self.headers.items())
        verified = self.server.verifies(body, headers)
        self.server.deliveries.append((self.path, headers, body, verified))
        if not verified:
            self.reply(401)
        elif self.path == "/slow":
            time.sleep(3)
            self.reply(200)
        elif self.path == "/endless":
            self.endless()
        else:
            status, extra = {
                "/ok": (204, {}),
                "/fail": (500, {}),
                "/gone": (410, {}),
                "/busy": (503, {"Retry-After": "30"}),
                "/moved": (301, {"Location": self.server.redirect_to}),
                "/found": (302, {"Location": self.server.redirect_to}),
            }.get(self.path, (404, {}))
            self.reply(status, extra)

    def reply(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def endless(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(ENDLESS_LIMIT // 65536):
                self.wfile.write(b"x" * 65536)
        except OSError:  # the sender stopped reading and closed
            self.server.hung_up.set()


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def receiver(secret) -> Iterator[Listener]:
    server = Listener([secret])
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def internal() -> Iterator[Listener]:
    """Stands for an internal service: nothing may ever connect to it."""
    server = Listener()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def sender_for(receiver: Listener, timeout_s: float = 5.0, **kwargs) -> WebhookSender:
    policy = UrlPolicy(allow_http=True, allowlist=[f"127.0.0.1:{receiver.port}"])
    return WebhookSender(policy, timeout_s=timeout_s, max_response_bytes=4096, **kwargs)


async def send(sender: WebhookSender, url: str, secrets: list[str], msg_id="msg_1"):
    return await sender.deliver(url, msg_id, int(time.time()), BODY_BYTES, secrets)


# --- signing ------------------------------------------------------------------------------


def test_signature_matches_the_reference_library(secret):
    timestamp = 1_700_000_000
    ours = sign(secret, "msg_2KWP", timestamp, BODY_BYTES)
    at = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    assert ours == Webhook(secret).sign("msg_2KWP", at, BODY)
    assert ours.startswith("v1,")


def test_known_answer():
    # `printf 'msg_1.1.{}' | openssl dgst -sha256 -mac HMAC -macopt hexkey:00..00 -binary
    # | base64`, with the 24 zero bytes that "whsec_AAAA..." stands for.
    secret = "whsec_" + "A" * 32
    assert secret_key(secret) == bytes(24)
    assert sign(secret, "msg_1", 1, b"{}") == "v1,OmiNie3fi8ZEZmbPlxeTQD55tTTpVS4mgkAkQDtSVQg="


def test_new_secret_is_random_and_well_formed():
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(secret_key(first)) == 32


@pytest.mark.parametrize(
    "bad",
    [
        "no-prefix-c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        "whsec_not base64!!",
        "whsec_" + "QUFB",  # 3 bytes: too short
        "whsec_",
    ],
)
def test_bad_secrets_are_refused_without_echo(bad):
    with pytest.raises(ValueError) as caught:
        sign(bad, "msg_1", 1, b"{}")
    assert bad not in str(caught.value)


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1", "msg\n1", "x" * 129])
def test_message_ids_that_could_confuse_the_signed_text_are_refused(secret, msg_id):
    with pytest.raises(ValueError):
        sign(secret, msg_id, 1, b"{}")


def test_rotation_signs_with_every_secret(secret):
    old = new_secret()
    timestamp = int(time.time())
    header = sign_all([secret, old], "msg_9", timestamp, BODY_BYTES)
    assert len(header.split(" ")) == 2
    headers = {
        "webhook-id": "msg_9",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": header,
    }
    assert Webhook(secret).verify(BODY_BYTES, headers) == json.loads(BODY)
    assert Webhook(old).verify(BODY_BYTES, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY_BYTES, headers)
    with pytest.raises(ValueError):
        sign_all([], "msg_9", timestamp, BODY_BYTES)


# --- delivery -----------------------------------------------------------------------------


async def test_delivery_is_signed_and_verified(receiver, secret):
    outcome = await send(sender_for(receiver), receiver.url("/ok"), [secret])
    assert outcome == DeliveryOutcome(True, 204, None, retry=False, disable=False)
    ((path, headers, body, verified),) = receiver.deliveries
    assert (path, body, verified) == ("/ok", BODY_BYTES, True)
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == "msg_1"
    assert headers["User-Agent"].startswith("image-serving-webhooks/")


async def test_wrong_secret_is_rejected_by_the_receiver(receiver):
    outcome = await send(sender_for(receiver), receiver.url("/ok"), [new_secret()])
    assert (outcome.delivered, outcome.status_code, outcome.retry) == (False, 401, True)
    assert receiver.deliveries[0][3] is False


async def test_rotation_verifies_with_either_secret(receiver, secret):
    sender = sender_for(receiver)
    old = new_secret()
    receiver.secrets = [old]  # the receiver still holds the old secret
    assert (await send(sender, receiver.url("/ok"), [secret, old])).delivered
    receiver.secrets = [secret]  # and later only the new one
    assert (await send(sender, receiver.url("/ok"), [secret, old])).delivered
    assert [verified for *_, verified in receiver.deliveries] == [True, True]


async def test_resending_keeps_id_and_body(receiver, secret):
    sender = sender_for(receiver)
    first = await sender.deliver(
        receiver.url("/fail"), "msg_7", int(time.time()), BODY_BYTES, [secret]
    )
    second = await sender.deliver(
        receiver.url("/ok"), "msg_7", int(time.time()), BODY_BYTES, [secret]
    )
    assert (first.delivered, second.delivered) == (False, True)
    (_, h1, b1, v1), (_, h2, b2, v2) = receiver.deliveries
    assert h1["webhook-id"] == h2["webhook-id"] == "msg_7"
    assert b1 == b2 == BODY_BYTES
    assert v1 and v2


async def test_server_error_is_retried(receiver, secret):
    outcome = await send(sender_for(receiver), receiver.url("/fail"), [secret])
    assert outcome == DeliveryOutcome(False, 500, "HTTP 500", retry=True, disable=False)


async def test_retry_after_is_reported(receiver, secret):
    outcome = await send(sender_for(receiver), receiver.url("/busy"), [secret])
    assert (outcome.status_code, outcome.retry, outcome.retry_after_s) == (503, True, 30.0)


async def test_gone_disables_the_endpoint(receiver, secret):
    outcome = await send(sender_for(receiver), receiver.url("/gone"), [secret])
    assert (outcome.delivered, outcome.status_code) == (False, 410)
    assert outcome.disable and not outcome.retry


@pytest.mark.parametrize("path", ["/moved", "/found"])
async def test_redirects_are_never_followed(receiver, internal, secret, path):
    receiver.redirect_to = internal.url("/ok")
    outcome = await send(sender_for(receiver), receiver.url(path), [secret])
    assert not outcome.delivered and outcome.retry
    assert outcome.status_code in (301, 302)
    assert "not followed" in outcome.error
    assert internal.accepts == 0


async def test_non_allowlisted_port_is_refused_before_connecting(receiver, internal, secret):
    outcome = await send(sender_for(receiver), internal.url("/ok"), [secret])
    assert not outcome.delivered and not outcome.retry and not outcome.disable
    assert outcome.status_code is None
    assert "non-public address" in outcome.error
    assert internal.accepts == 0


async def test_plain_http_is_refused_unless_allowed(receiver, secret):
    policy = UrlPolicy(allowlist=[f"127.0.0.1:{receiver.port}"])
    sender = WebhookSender(policy, timeout_s=5, max_response_bytes=4096)
    outcome = await send(sender, receiver.url("/ok"), [secret])
    assert "scheme must be https" in outcome.error
    assert receiver.accepts == 0


async def test_slow_receiver_times_out(receiver, secret):
    outcome = await send(sender_for(receiver, timeout_s=0.5), receiver.url("/slow"), [secret])
    assert outcome == DeliveryOutcome(
        False, None, "no answer within 0.5 s", retry=True, disable=False
    )


async def test_reply_is_read_only_up_to_the_cap(receiver, secret):
    outcome = await send(sender_for(receiver), receiver.url("/endless"), [secret])
    assert outcome.delivered
    # The receiver's writes failed: the sender hung up instead of reading 64 MiB.
    assert receiver.hung_up.wait(10)


async def test_closed_port_is_a_retryable_connection_failure(secret):
    closed = Listener()
    port = closed.port
    closed.server_close()
    policy = UrlPolicy(allow_http=True, allowlist=[f"127.0.0.1:{port}"])
    sender = WebhookSender(policy, timeout_s=5, max_response_bytes=4096)
    outcome = await send(sender, f"http://127.0.0.1:{port}/ok", [secret])
    assert outcome == DeliveryOutcome(
        False, None, "could not connect to the receiver", retry=True, disable=False
    )


# --- backoff ------------------------------------------------------------------------------


def test_retry_delay_follows_the_schedule_with_jitter():
    rng = random.Random(7)
    for attempt, base in enumerate(DEFAULT_RETRY_SCHEDULE_S, start=1):
        delays = [retry_delay(attempt, DEFAULT_RETRY_SCHEDULE_S, rng) for _ in range(50)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(set(delays)) > 1  # jittered, not fixed
    assert retry_delay(len(DEFAULT_RETRY_SCHEDULE_S) + 1, DEFAULT_RETRY_SCHEDULE_S, rng) is None


def test_retry_delay_custom_schedule_and_bad_attempt():
    rng = random.Random(1)
    assert retry_delay(1, [10.0], rng, jitter=0) == 10.0
    assert retry_delay(2, [10.0], rng) is None
    assert retry_delay(1, [], rng) is None
    with pytest.raises(ValueError):
        retry_delay(0, [10.0], rng)
    seeded = [retry_delay(3, DEFAULT_RETRY_SCHEDULE_S, random.Random(5)) for _ in range(2)]
    assert seeded[0] == seeded[1]  # the same rng seed gives the same delay
