"""The public shape of jobs and batches: one function each, used by the API and the
webhook payloads, so both say the same thing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from serve_app.jobs.records import BatchRecord, DeliveryRecord, JobRecord
from serve_app.protocol import DeliveryStatus, JobStatus


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 3)


def job_object(
    job: JobRecord,
    *,
    image_url: Callable[[str], str] | None = None,
    queue_position: int | None = None,
    delivery: DeliveryRecord | None = None,
) -> dict[str, Any]:
    """A job as clients see it; `image_url` turns a stored key into a fresh link."""
    result = None
    if job.result is not None and "completion" in job.result:
        result = job.result  # a chat job's answer
    elif job.result is not None:
        images = []
        for image in job.result["images"]:
            item = {k: image[k] for k in ("seed", "sha256", "width", "height")}
            if image_url is not None:
                item["url"] = image_url(image["key"])
            images.append(item)
        result = {**{k: v for k, v in job.result.items() if k != "images"}, "images": images}
    progress = None
    if job.progress_total:
        progress = {"step": job.progress_step or 0, "total": job.progress_total}
    return {
        "id": job.id,
        "object": "job",
        "type": job.type,
        "status": job.status,
        "created_at": int(job.created_at),
        "started_at": int(job.started_at) if job.started_at else None,
        "finished_at": int(job.finished_at) if job.finished_at else None,
        "timings": {
            # Known once the job has left the queue (or ended in it), and once it has ended.
            "queued_s": _seconds(job.created_at, job.started_at or job.finished_at),
            "running_s": _seconds(job.started_at, job.finished_at),
        },
        "attempts": job.attempts,
        "progress": progress,
        "queue_position": queue_position if job.status == JobStatus.QUEUED else None,
        "batch_id": job.batch_id,
        "metadata": job.client_metadata,
        "result": result,
        "error": job.error,
        "webhook": delivery_object(delivery) if delivery is not None else None,
    }


def delivery_object(delivery: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": int(delivery.next_attempt_at)
        if delivery.status == DeliveryStatus.PENDING
        else None,
        "delivered_at": int(delivery.delivered_at) if delivery.delivered_at else None,
    }


def batch_object(
    batch: BatchRecord, job_ids: list[str] | None = None, delivery: DeliveryRecord | None = None
) -> dict[str, Any]:
    counts = {status.value: batch.counts.get(status, 0) for status in JobStatus}
    return {
        "id": batch.id,
        "object": "batch",
        "status": batch.status,
        "created_at": int(batch.created_at),
        "finished_at": int(batch.finished_at) if batch.finished_at else None,
        "total": batch.total,
        "counts": counts,
        "metadata": batch.client_metadata,
        "job_ids": job_ids,
        "webhook": delivery_object(delivery) if delivery is not None else None,
    }


def event_payload(event: str, data: dict[str, Any], now: float) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return {"type": event, "timestamp": stamp, "data": data}
