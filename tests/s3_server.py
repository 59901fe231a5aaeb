"""A real S3-compatible server for tests: moto's server app in a subprocess on 127.0.0.1.

Run as `python -m tests.s3_server --port N`. moto 5 does not check the expiry of presigned
URLs, which real S3 and MinIO do, so the app here refuses a presigned request whose
`X-Amz-Date` + `X-Amz-Expires` lies in the past (403 AccessDenied, as S3 answers) and
hands everything else to moto unchanged.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
EXPIRED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


class PresignedExpiry:
    """WSGI middleware: S3's expiry rule for SigV4 presigned URLs, in front of moto."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if _expired(query, datetime.datetime.now(datetime.UTC)):
            start_response(
                "403 Forbidden",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(EXPIRED_BODY)))],
            )
            return [EXPIRED_BODY]
        return self.app(environ, start_response)


def _expired(query: dict[str, list[str]], now: datetime.datetime) -> bool:
    if "X-Amz-Expires" not in query or "X-Amz-Date" not in query:
        return False
    signed_at = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    lifetime = datetime.timedelta(seconds=int(query["X-Amz-Expires"][0]))
    return now > signed_at.replace(tzinfo=datetime.UTC) + lifetime


class S3Server:
    """Starts and stops the subprocess; `endpoint_url` is where boto3 should point."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.s3_server", "--port", str(self.port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the S3 test server exited at start")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the S3 test server did not listen within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _exit_with_parent(parent_pid: int) -> None:
    """A test run killed before its teardown must not leave this server behind."""
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(0)


def main() -> None:
    parent_pid = os.getppid()  # before the slow imports, which a parent may not outlive
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    app = PresignedExpiry(DomainDispatcherApplication(create_backend_app))
    make_server(
        "127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler
    ).serve_forever()


if __name__ == "__main__":
    main()
