"""Processes that tests start in a session of their own and kill whole: an application in
its own Ray instance, or a Ray node (`ray start --block` and everything it spawned)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def session_pids(session: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 3 and 6 of /proc/PID/stat: the state, the session id. A zombie is dead
        # already; only its parent (gone too) could reap it.
        if fields[0] != "Z" and int(fields[3]) == session:
            pids.append(int(entry.name))
    return pids


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL to every process in the session `process` leads (started with
    `start_new_session=True`): no process of it gets to say goodbye."""
    session = process.pid
    for _ in range(3):
        for pid in session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    process.wait(timeout=30)
    assert session_pids(session) == []
