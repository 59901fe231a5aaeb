"""Sending the webhook outbox: claim due deliveries, send each signed, record the outcome
and when to try again."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from serve_app.errors import ServiceError
from serve_app.jobs.records import DeliveryRecord
from serve_app.jobs.store import JobStore
from serve_app.jobs.webhooks import WebhookSender, retry_delay
from serve_app.protocol import DeliveryStatus

logger = logging.getLogger(__name__)


class WebhookDispatcher:
    def __init__(
        self,
        store: JobStore,
        sender: WebhookSender,
        secrets: list[str],
        retry_schedule_s: list[float],
        poll_interval_s: float = 0.5,
        max_in_flight: int = 16,
    ):
        self.store = store
        self.sender = sender
        self.secrets = secrets
        self.retry_schedule_s = retry_schedule_s
        self.poll_interval_s = poll_interval_s
        self.max_in_flight = max_in_flight
        # Held while sending; a runner that dies mid-send frees it for another.
        self.lease_s = sender.timeout_s + 30
        self._rng = random.Random()

    async def run(self) -> None:
        while True:
            try:
                due = await asyncio.to_thread(
                    self.store.claim_deliveries, self.max_in_flight, self.lease_s
                )
                await asyncio.gather(*(self.deliver(delivery) for delivery in due))
            except Exception:
                logger.exception("webhooks: store unavailable; retrying")
                due = []
            if not due:
                await asyncio.sleep(self.poll_interval_s)

    async def deliver(self, delivery: DeliveryRecord) -> None:
        now = time.time()
        next_attempt_at = None
        try:
            outcome = await self.sender.deliver(
                delivery.url, delivery.id, int(now), delivery.payload.encode(), self.secrets
            )
        except ServiceError as error:  # the URL is refused now (SSRF rules): never retried
            status, code, message = DeliveryStatus.FAILED, None, error.message
        else:
            code, message = outcome.status_code, outcome.error
            if outcome.delivered:
                status = DeliveryStatus.DELIVERED
            elif outcome.disable:
                status = DeliveryStatus.DISABLED
            else:
                # This was attempt number attempts + 1.
                delay = retry_delay(delivery.attempts + 1, self.retry_schedule_s, self._rng)
                if not outcome.retry or delay is None:
                    status = DeliveryStatus.FAILED
                else:
                    # A receiver's Retry-After may ask for longer, up to an hour.
                    delay = max(delay, min(outcome.retry_after_s or 0.0, 3600.0))
                    status, next_attempt_at = DeliveryStatus.PENDING, now + delay
        if status != DeliveryStatus.DELIVERED:
            logger.info(
                "webhook %s to job/batch %s: %s (%s)",
                delivery.id,
                delivery.subject_id,
                status,
                message or code,
            )
        await asyncio.to_thread(
            self.store.record_delivery,
            delivery.id,
            delivery.lease_token,
            status=status,
            status_code=code,
            error=message,
            next_attempt_at=next_attempt_at,
        )
