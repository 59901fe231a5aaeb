"""Every example in the README, run as a reader would run it, against the real app.

Blocks are read from README.md in order. bash runs in a scratch folder (with `.venv` and
`configs/` beside it, as in a checkout), one command at a time, so that a placeholder a
reader fills in from an earlier command's output (`job_…`, `<prefix>`, `sk-…`) is filled
the same way; Python runs in one namespace, as pasted into one session. The only change
made to any block is the address: the test's app is not on port 8000. A block this file
does not know fails the test, so the README cannot gain an example nobody checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serve_app.config import ModelConfig
from tests.helpers import REPO
from tests.integration.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.integration

README = REPO / "README.md"
README_ADDRESS = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
ENVELOPE = re.compile(r'"error":\s*\{')

# Blocks that are not run, by their first line, and why.
NOT_RUN = {
    "make serve   # installs": "starts the service and runs this suite: the app is running",
    "export IMAGE_SERVICE_WEBHOOK_SECRETS=": "restarts the service with a new secret; the "
    "test app has one, and the Python block after it verifies a real delivery",
    "make bench-cpu": "a benchmark sweep (minutes of CPU); test_benchmark_harness.py runs it small",
    "# Another model or shape": "a benchmark sweep, as above",
}
# Placeholders a reader fills from what an earlier command printed.
PLACEHOLDERS = {
    "job_…": re.compile(r"\bjob_[0-9a-f]{16,}\b"),
    "sk-…": re.compile(r"\bsk-[a-z0-9]{12}-\S+"),
    "<prefix>": re.compile(r"\bsk-([a-z0-9]{12})-"),
}


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    code: str

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0] if self.code.strip() else ""

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'text'}: {self.first_line[:60]!r})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in FENCE.finditer(text)
    ]


class Reader:
    """Runs blocks in a scratch checkout: the app's address swapped in, placeholders
    filled from earlier output, `export`s kept for the commands after them."""

    def __init__(self, folder: Path, base_url: str):
        self.folder = folder
        self.base_url = base_url
        self.env = {**os.environ, "PATH": f"{folder / '.venv/bin'}:{os.environ['PATH']}"}
        self.filled: dict[str, str] = {}
        self.namespace: dict[str, Any] = {}
        (folder / ".venv").symlink_to(REPO / ".venv")
        shutil.copytree(REPO / "configs", folder / "configs")

    def address(self, code: str) -> str:
        return code.replace(README_ADDRESS, self.base_url)

    def bash(self, block: Block) -> str:
        printed = []
        for command in shell_commands(self.address(block.code)):
            for placeholder, value in self.filled.items():
                command = command.replace(placeholder, value)
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                self.env[name] = self._run(f"printf %s {value}", block)
                continue
            output = self._run(command, block)
            printed.append(output)
            for placeholder, pattern in PLACEHOLDERS.items():
                found = pattern.search(output)
                if found and placeholder not in self.filled:
                    self.filled[placeholder] = found.group(found.lastindex or 0)
        return "".join(printed)

    def _run(self, command: str, block: Block) -> str:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"{block}: {command!r} failed:\n{done.stderr[-2000:]}"
        assert not ENVELOPE.search(done.stdout), f"{block}: {command!r} got:\n{done.stdout}"
        return done.stdout

    def python(self, block: Block, **given: Any) -> str:
        self.namespace.update(given)
        printed = io.StringIO()
        with contextlib.chdir(self.folder), contextlib.redirect_stdout(printed):
            exec(compile(self.address(block.code), str(block), "exec"), self.namespace)
        return printed.getvalue()


def shell_commands(code: str) -> list[str]:
    """The block's commands, each whole (continued lines and multi-line quotes joined, as
    bash's own syntax check says), comment lines dropped."""
    commands, current = [], ""
    for line in code.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if line.endswith("\\"):
            continue
        checked = current
        for placeholder in PLACEHOLDERS:
            checked = checked.replace(placeholder, "x")
        if subprocess.run(["bash", "-n", "-c", checked], capture_output=True).returncode == 0:
            commands.append(current.rstrip("\n"))
            current = ""
    assert not current, f"unfinished command: {current!r}"
    return commands


def finished_job(client, **extra: Any) -> dict:
    body = {
        "type": "image_generation",
        "request": {"model": "sd-tiny", "prompt": "a mug", "size": "64x64", "steps": 2},
        **extra,
    }
    job = client.post("/v1/jobs", json=body).json()
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    return job


def delivery_of(webhook_receiver, job_id: str):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for delivery in webhook_receiver.received("/ok"):
            if json.loads(delivery.body)["data"]["id"] == job_id:
                return delivery
        time.sleep(0.2)
    raise AssertionError(f"no webhook for {job_id}")


def test_every_readme_example_runs_against_the_app(base_url, client, webhook_receiver, tmp_path):
    reader = Reader(tmp_path, base_url)
    ran, not_run = [], set()
    for block in readme_blocks():
        first = block.first_line
        skipped = [prefix for prefix in NOT_RUN if first.startswith(prefix)]
        if skipped:
            not_run.update(skipped)
            continue
        if block.lang == "bash":
            printed = reader.bash(block)
        elif block.lang == "python" and first == "import httpx":
            # The job events example: `job_id` is the reader's own job.
            printed = reader.python(block, job_id=finished_job(client)["id"])
            assert "status" in printed and "progress" in printed, printed
        elif block.lang == "python" and first == "from standardwebhooks import Webhook":
            # The receiver's side: a real delivery, checked with the service's secret.
            job = finished_job(client, callback_url=webhook_receiver.url("/ok"))
            delivery = delivery_of(webhook_receiver, job["id"])
            code = block.code.replace('"whsec_..."', repr(WEBHOOK_SECRET))
            reader.python(
                Block(block.line, block.lang, code),
                request_body=delivery.body,
                request_headers=delivery.headers,
            )
            assert reader.namespace["job_id"] == job["id"]
            printed = "verified"
        elif block.lang == "python":
            printed = reader.python(block)
        elif block.lang == "json":
            printed = check_error_example(block, client)
        elif block.lang == "yaml":
            ModelConfig.model_validate(yaml.safe_load(block.code)[0])
            printed = "valid"
        elif block.lang == "" and first.startswith("serve_app/"):
            printed = check_layout(block)
        else:
            raise AssertionError(f"{block} is not known to this test: run it or say why not")
        ran.append((block, printed))
    # What the examples say they print, and the placeholders a reader fills.
    assert not_run == set(NOT_RUN), "a NOT_RUN entry names no block any more"
    assert any("preview" in printed and "done" in printed for _, printed in ran)
    assert reader.filled.keys() >= {"job_…", "sk-…", "<prefix>"}


def check_error_example(block: Block, client) -> str:
    """The envelope example is what the request it describes gets (but its request id)."""
    shown = json.loads(block.code)["error"]
    model = re.search(r"model '([^']+)'", shown["message"]).group(1)
    limit = int(re.search(r"at most (\d+)", shown["message"]).group(1))
    answer = client.post(
        "/v1/images/generations", json={"model": model, "prompt": "x", "n": limit + 1}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert {**error, "request_id": "..."} == shown
    return json.dumps(error)


def check_layout(block: Block) -> str:
    """Every file and folder the layout names at the start of a line exists."""
    named = []
    parent = ""
    for line in block.code.splitlines():
        first = line.split()[0] if line.strip() else ""
        indented = line.startswith("  ") and not line.startswith("   ")
        if not first or not re.fullmatch(r"[\w.]+/?", first) or line.startswith("        "):
            continue
        path = (parent + first) if indented else first
        if not indented and first.endswith("/"):
            parent = first
        named.append(path)
    missing = [path for path in named if not (REPO / path).exists()]
    assert not missing, missing
    return " ".join(named)


def test_the_readme_names_no_address_but_its_own():
    """Examples speak to 127.0.0.1:8000 only (what `make serve` binds), so the swap above
    is the only change a block needs."""
    for block in readme_blocks():
        for url in re.findall(r"https?://[^\s\"'`)]+", block.code):
            assert url.startswith(README_ADDRESS) or "example.com" in url, (str(block), url)
    assert httpx.URL(README_ADDRESS).port == 8000
