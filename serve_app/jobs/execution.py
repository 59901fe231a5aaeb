"""Running one job: the sync API's own planning and model call, then its images stored
under keys that derive from the job id, so a re-run overwrites instead of duplicating."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from serve_app.api.protocol import ImageEditRequest, ImageGenerationRequest
from serve_app.api.serving import GatewayService
from serve_app.jobs.records import JobRecord
from serve_app.models.spec import GenerationResult
from serve_app.storage.keys import job_result_key

JOB_REQUESTS: dict[str, type[ImageGenerationRequest] | type[ImageEditRequest]] = {
    "image_generation": ImageGenerationRequest,
    "image_edit": ImageEditRequest,
}


class JobExecutor:
    def __init__(self, service: GatewayService):
        self.service = service

    async def execute(self, job: JobRecord) -> dict[str, Any]:
        """The job's result; raises the ServiceError the sync API would have answered."""
        body = JOB_REQUESTS[job.type].model_validate(job.request)
        if isinstance(body, ImageEditRequest):
            call = await self.service.plan_edit(body, [], None)
        else:
            call = await self.service.plan_generation(body)
        spec = replace(call.spec, job_id=job.id)
        result = await self.service.call_model(call.model, spec)
        images = await asyncio.to_thread(self._store, job.id, spec.output_format, result)
        return {
            "model": call.model.name,
            "size": call.size,
            "steps": call.steps,
            "revised_prompt": call.revised_prompt,
            "output_format": spec.output_format,
            "images": images,
        }

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
        for image in result["images"]:
            self.service.storage.delete(image["key"])
