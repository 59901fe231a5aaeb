"""A Ray node of its own on 127.0.0.1 (`ray start --block` in its own session, every port
chosen here) and the commands run against it: for tests that deploy with `serve deploy`
and kill processes, as an operator's cluster would see them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.helpers import free_port
from tests.integration.processes import kill_session

BIN = Path(sys.executable).parent


class RayNode:
    """`ray start --block` in a session of its own, every port chosen here (another Ray,
    the test session's, runs on this machine too)."""

    def __init__(self, env: dict[str, str], log: Path, head_port: int | None, resource: str):
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        command = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1"]
        command += ["--num-cpus=4", f"--resources={json.dumps({resource: 1})}"]
        command += [f"{flag}={port}" for flag, port in ports.items()]
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        if head_port is None:
            self.port, self.dashboard_port = free_port(), free_port()
            command += [
                "--head",
                f"--port={self.port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                # Short: Ray's socket paths under it must fit in 107 bytes.
                f"--temp-dir={self.temp_dir}",
            ]
        else:
            command += [f"--address=127.0.0.1:{head_port}"]
        self.log_path = log
        self.log = log.open("ab")
        # The working directory is not the repository: the config's paths are absolute.
        self.process = subprocess.Popen(
            command,
            cwd=log.parent,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def started(self) -> bool:
        """Whether `ray start` got past starting; it keeps running (--block) while its
        node lives, and an early exit is a failure with its log."""
        if self.process.poll() is not None:
            raise AssertionError(f"ray start exited: {self.log_path.read_text()[-3000:]}")
        return "Ray runtime started" in self.log_path.read_text()

    def kill(self) -> None:
        kill_session(self.process)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def dashboard_up(address: str) -> bool:
    try:
        return httpx.get(f"{address}/api/version", timeout=5).status_code < 500
    except httpx.HTTPError:
        return False


def run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout
