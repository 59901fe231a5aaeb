"""The OpenAPI document tells the truth: schemathesis fuzzes every operation of a real app
from its /openapi.json, bounded in examples and time, and fails on any 5xx or contract
mismatch (undocumented status, header or content type, a response off its schema, a
schema-violating request accepted, or a schema-valid one refused for a reason the schema
could have said: see contract_hooks.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.integration.conftest import deploy_and_wait, integration_app_args

pytestmark = pytest.mark.integration

# A DELETE cancels a job, which stays readable (status canceled) for whoever asks why it
# ended; schemathesis's use_after_free check expects a 404 after a DELETE.
EXCLUDED_CHECKS = ("positive_data_acceptance", "use_after_free")


@pytest.fixture(scope="module")
def contract_url(serve_port, tiny_cache, tmp_path_factory):
    """A real app whose positive cases are cheap: two tiny image models at 64x64 and two
    steps, the tiny vision-chat model answering at most 8 tokens, webhooks off (so
    `callback_url` leaves the schema)."""
    from ray import serve

    args = integration_app_args(tmp_path_factory.mktemp("contract"), tiny_cache)
    chat = next(model for model in args["models"] if model["name"] == "glm-4.6v-tiny")
    small = {"max_n": 2, "min_side": 64, "max_side": 64, "max_pixels": 4096, "max_steps": 2}
    args["models"] = [
        {**model, "defaults": {**model["defaults"], "size": "64x64", "steps": 2}, "limits": small}
        for model in args["models"]
        if model["name"] in ("sd-tiny", "pix2pix-tiny")
    ]
    for model in args["models"]:
        model["batching"] = {"max_batch_size": 4}
    args["models"].append(
        {**chat, "chat": {"defaults": {"max_tokens": 8}, "limits": {"max_output_tokens": 8}}}
    )
    args["jobs"]["webhooks"]["enabled"] = False
    # A job's event stream closes after five seconds (a client would reconnect), within
    # the fuzzer's request timeout.
    args["jobs"]["event_stream_s"] = 5
    yield deploy_and_wait(args, "contract", "/contract", serve_port)
    serve.delete("contract")


def test_the_openapi_document_is_the_contract(contract_url, tmp_path):
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{contract_url}/openapi.json",
        "--url",
        contract_url,
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        # Bounded by examples, not by --max-time (which fuzzes until the time is spent).
        "--max-examples",
        "8",
        "--seed",
        "20261130",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.integration.contract_hooks",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    report = done.stdout[-12000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "Selected: 22/22" in report and "Tested: 22" in report, report
