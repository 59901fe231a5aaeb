"""What the job store hands out: plain, picklable records of its rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant: str
    type: str
    request: dict[str, Any]
    client_metadata: dict[str, str] | None
    callback_url: str | None
    batch_id: str | None
    status: str
    attempts: int
    max_attempts: int
    worker_id: str | None
    lease_token: str | None
    lease_expires_at: float | None
    heartbeat_at: float | None
    run_after: float
    progress_step: int | None
    progress_total: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        values = dict(row._mapping)
        for name in ("request", "client_metadata", "result", "error"):
            values[name] = _json_or_none(values[name])
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class BatchRecord:
    id: str
    tenant: str
    status: str
    callback_url: str | None
    client_metadata: dict[str, str] | None
    total: int
    created_at: float
    finished_at: float | None
    # Jobs per status, filled in by the store when it reads the batch.
    counts: dict[str, int]

    @classmethod
    def from_row(cls, row: Any, counts: dict[str, int]) -> BatchRecord:
        values = dict(row._mapping)
        values["client_metadata"] = _json_or_none(values["client_metadata"])
        values["counts"] = counts
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    tenant: str
    subject_id: str
    event: str
    url: str
    payload: str
    status: str
    attempts: int
    next_attempt_at: float
    lease_token: str | None
    lease_expires_at: float | None
    last_status_code: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> DeliveryRecord:
        values = dict(row._mapping)
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class NewJob:
    """A job as the API hands it to the store: validated, its seed fixed."""

    id: str
    tenant: str
    type: str
    request: dict[str, Any]
    client_metadata: dict[str, str] | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    created_at: float

    @classmethod
    def from_row(cls, row: Any) -> JobEvent:
        return cls(row.job_id, row.seq, row.kind, json.loads(row.data), row.created_at)
