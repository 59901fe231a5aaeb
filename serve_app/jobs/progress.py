"""Job progress from a model replica's step callback into the job store, throttled.

It runs on the pipeline's thread, so it writes at most every `interval_s` and never
raises: a progress report must not fail or slow a generation.
"""

from __future__ import annotations

import logging
import threading
import time

from serve_app.jobs.store import JobStore

logger = logging.getLogger(__name__)


class ProgressReporter:
    def __init__(self, store_url: str, interval_s: float = 0.5):
        self.store_url = store_url
        self.interval_s = interval_s
        self._store: JobStore | None = None
        self._last_write = 0.0
        self._lock = threading.Lock()

    def __call__(self, job_ids: list[str], step: int, total: int) -> None:
        now = time.monotonic()
        if step < total and now - self._last_write < self.interval_s:
            return
        self._last_write = now
        try:
            with self._lock:
                if self._store is None:  # only replicas that see jobs open the store
                    self._store = JobStore(self.store_url)
            self._store.set_progress(job_ids, step, total)
        except Exception:
            logger.warning("could not record progress of %d job(s)", len(job_ids), exc_info=True)
