"""A model replica's link to the job store: step progress and previews of the durable jobs
in its pipeline calls, and which of those jobs were canceled meanwhile.

It runs on the pipeline's (or the preview worker's) thread, so it writes progress at
most every `interval_s` and never raises: a progress report must not fail a generation.
It looks for cancellations after every step (`check_s` = 0; one indexed read), so a
canceled job's call stops at the step after the cancel is committed.
"""

from __future__ import annotations

import base64
import logging
import threading
import time

from serve_app.jobs.store import JobStore
from serve_app.models.spec import PartialImage

logger = logging.getLogger(__name__)


class ProgressReporter:
    def __init__(self, store_url: str, interval_s: float = 0.5, check_s: float = 0.0):
        self.store_url = store_url
        self.interval_s = interval_s
        self.check_s = check_s
        self._store: JobStore | None = None
        self._last_write = self._last_check = 0.0
        self._lock = threading.Lock()

    def _open(self) -> JobStore:
        with self._lock:
            if self._store is None:  # only replicas that see jobs open the store
                self._store = JobStore(self.store_url)
            return self._store

    def __call__(self, job_ids: list[str], step: int, total: int) -> set[str] | None:
        """Record progress when due; returns the ids no longer running (canceled, or
        taken back by the sweeper), or None when it did not look."""
        now = time.monotonic()
        write = step >= total or now - self._last_write >= self.interval_s
        if not write and now - self._last_check < self.check_s:
            return None
        self._last_check = now
        try:
            store = self._open()
            if write:
                self._last_write = now
                running = store.set_progress(job_ids, step, total)
            else:
                running = store.running_jobs(job_ids)
        except Exception:
            logger.warning("could not record progress of %d job(s)", len(job_ids), exc_info=True)
            return None
        return set(job_ids) - running

    def preview(self, job_id: str, partial: PartialImage) -> None:
        """A job's partial image, into its event stream (GET /v1/jobs/{id}/events)."""
        data = {
            "index": partial.index,
            "partial_image_index": partial.partial_image_index,
            "b64_json": base64.b64encode(partial.data).decode("ascii"),
            "output_format": partial.output_format,
            "width": partial.width,
            "height": partial.height,
            "step": partial.step,
            "steps": partial.steps,
        }
        try:
            self._open().add_preview(job_id, data)
        except Exception:
            logger.warning("could not record a preview of job %s", job_id, exc_info=True)
