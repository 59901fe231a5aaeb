"""Running one job: the sync API's own planning and model call, then its images stored
under keys that derive from the job id, so a re-run overwrites instead of duplicating."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from pydantic import TypeAdapter

from serve_app import environment
from serve_app.config import AppConfig
from serve_app.errors import ErrorCode, ServiceUnavailableError
from serve_app.jobs.delivery import WebhookDispatcher
from serve_app.jobs.records import JobRecord
from serve_app.jobs.runner import JobRunner
from serve_app.jobs.store import JobStore
from serve_app.jobs.webhooks import WebhookSender, callback_policy
from serve_app.models.spec import GenerationResult
from serve_app.protocol import ChatJob, ImageEditJob, JobItem
from serve_app.service.chat import ChatService
from serve_app.service.images import ImageService
from serve_app.storage.keys import job_result_key

STORED_JOB = TypeAdapter(JobItem)


class JobExecutor:
    def __init__(self, service: ImageService, chat: ChatService | None = None):
        self.service = service
        self.chat = chat

    async def execute(self, job: JobRecord) -> dict[str, Any]:
        """The job's result; raises the ServiceError the sync API would have answered."""
        item = STORED_JOB.validate_python({"type": job.type, "request": job.request})
        if isinstance(item, ChatJob):
            return await self._answer(item, job.id)
        if isinstance(item, ImageEditJob):
            call = await self.service.plan_edit(item.request, [], None)
        else:
            call = await self.service.plan_generation(item.request)
        # Previews, if asked for, go to the job's event stream.
        spec = replace(call.spec, job_id=job.id, partial_images=item.request.partial_images)
        result = await self.service.run(replace(call, spec=spec), job.tenant)
        images = await asyncio.to_thread(self._store, job.id, spec.output_format, result)
        return {
            "model": call.model.name,
            "size": call.size,
            "steps": call.steps,
            "revised_prompt": call.revised_prompt,
            "output_format": spec.output_format,
            "images": images,
        }

    async def _answer(self, item: ChatJob, job_id: str) -> dict[str, Any]:
        if self.chat is None:
            raise ServiceUnavailableError(
                "this job runner serves no vision-chat model", code=ErrorCode.MODEL_NOT_FOUND
            )
        completion, _ = await self.chat.complete(item.request, job_id=job_id)
        return {"model": completion.model, "completion": completion.model_dump(mode="json")}

    def _store(self, job_id: str, fmt: str, result: GenerationResult) -> list[dict[str, Any]]:
        images = []
        for index, image in enumerate(result.images):
            stored = self.service.storage.put(
                image.data, fmt, key=job_result_key(job_id, index, fmt)
            )
            images.append(
                {
                    "key": stored.key,
                    "seed": image.seed,
                    "sha256": stored.sha256,
                    "width": image.width,
                    "height": image.height,
                }
            )
        return images

    def discard(self, result: dict[str, Any]) -> None:
        """Remove a canceled job's images."""
        for image in result.get("images", []):
            self.service.storage.delete(image["key"])


def open_job_runner(
    config: AppConfig, images: ImageService, worker_id: str, chat: ChatService | None = None
) -> JobRunner:
    """The JobRunner's loop over the image service: the job store (tables created), and the
    webhook sender when secrets are set. Blocking: run it off the event loop."""
    jobs = config.jobs
    store = JobStore(environment.job_store_url(jobs.store_url))
    store.create_schema()
    secrets = environment.webhook_secrets()
    webhooks = None
    if secrets:
        sender = WebhookSender(
            callback_policy(jobs.webhooks),
            timeout_s=jobs.webhooks.timeout_s,
            max_response_bytes=65536,
        )
        webhooks = WebhookDispatcher(
            store, sender, secrets, jobs.webhooks.retry_schedule_s, jobs.poll_interval_s
        )
    return JobRunner(store, JobExecutor(images, chat), jobs, worker_id=worker_id, webhooks=webhooks)
