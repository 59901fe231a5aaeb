"""POST /v1/images/generations and /v1/images/edits, as the OpenAI SDK sends them."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from serve_app.api.dependencies import Images
from serve_app.api.errors import error_responses
from serve_app.api.middleware import request_notes
from serve_app.api.sse import MEDIA_TYPE, SSE_HEADERS, SSE_SCHEMA, error_event, sse
from serve_app.api.tenancy import authorize_model, tenant_of
from serve_app.errors import (
    ErrorCode,
    InvalidRequestError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from serve_app.families import Task
from serve_app.models.spec import GenerationResult
from serve_app.observability.access_log import RequestNotes
from serve_app.protocol import (
    FORM,
    MAX_IMAGES,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    validation_error,
)
from serve_app.service.image_inputs import ImageSource
from serve_app.service.images import ImageStream

logger = logging.getLogger(__name__)
router = APIRouter(tags=["images"])

# The files the form's schema allows (`image`, every `image[]`, the mask); a model refuses
# more images than it takes. Every field of the JSON body, and then some.
MAX_FORM_FILES = MAX_IMAGES + 2
MAX_FORM_FIELDS = 40
IMAGE_FIELD = re.compile(r"^image(\[\d{0,2}\])?$")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

ModelT = TypeVar("ModelT", bound=BaseModel)
SplitT = TypeVar("SplitT")


def parse_body(model: type[ModelT], raw: bytes | dict[str, str]) -> ModelT:
    """Validate a JSON body or a form's fields read by hand, with the same errors as
    FastAPI's own parsing."""
    try:
        if isinstance(raw, bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw, context=FORM)
    except ValidationError as error:
        raise validation_error(error.errors()) from None


async def read_form(
    request: Request,
    split: Callable[[FormData], Awaitable[SplitT]],
    *,
    max_files: int,
    max_fields: int,
) -> SplitT:
    """A form split into what a route takes, within Starlette's part limits."""
    try:
        # The context closes spooled upload files, also when a field is refused.
        async with request.form(max_files=max_files, max_fields=max_fields) as form:
            return await split(form)
    except HTTPException as error:  # Starlette's parser: malformed, too many parts
        raise InvalidRequestError(
            f"the form could not be read: {error.detail}", code=ErrorCode.INVALID_FORM
        ) from None


async def read_edit_form(
    request: Request, max_image_bytes: int
) -> tuple[ImageEditRequest, list[ImageSource], ImageSource | None]:
    """The OpenAI SDK's multipart edit: files `image`, `image[]` (or `image[i]`), `mask`."""
    fields, uploads, mask = await read_form(
        request,
        lambda form: split_form(form, max_image_bytes),
        max_files=MAX_FORM_FILES,
        max_fields=MAX_FORM_FIELDS,
    )
    return parse_body(ImageEditRequest, fields), uploads, mask


async def split_form(
    form: FormData, max_image_bytes: int
) -> tuple[dict[str, str], list[ImageSource], ImageSource | None]:
    """(text fields, images, mask); each field once, images and the mask as files only."""
    fields: dict[str, str] = {}
    uploads: list[ImageSource] = []
    mask: ImageSource | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            # One byte over the image cap is enough for the decoder to answer 413.
            data = await value.read(max_image_bytes + 1)
            if IMAGE_FIELD.fullmatch(key):
                uploads.append(ImageSource(f"image[{len(uploads)}]", upload=data))
            elif key == "mask" and mask is None:
                mask = ImageSource("mask", upload=data)
            else:
                raise InvalidRequestError(
                    f"unexpected file field {key[:40]!r}",
                    code=ErrorCode.INVALID_FILE_FIELD,
                    param=key[:40],
                )
        elif key in fields or IMAGE_FIELD.fullmatch(key) or key == "mask":
            raise InvalidRequestError(
                f"field {key[:40]!r} must be given once, and images as files",
                code=ErrorCode.INVALID_FORM_FIELD,
                param=key[:40],
            )
        else:
            fields[key] = value
    return fields, uploads, mask


def images_answer(response: ImagesResponse, result: GenerationResult) -> JSONResponse:
    headers = {"x-batch-images": str(result.batch_images)}
    if result.cache is not None:
        headers["x-cache"] = result.cache
    return JSONResponse(response.model_dump(exclude_none=True), headers=headers)


def streamed_answer(
    request: Request, stream: ImageStream, notes: RequestNotes
) -> StreamingResponse:
    return StreamingResponse(
        image_events(request, stream, notes), media_type=MEDIA_TYPE, headers=SSE_HEADERS
    )


async def image_events(
    request: Request, stream: ImageStream, notes: RequestNotes
) -> AsyncIterator[bytes]:
    """OpenAI's image events, `[DONE]`, or an error event when the model fails after the
    status line went. Closing it (the client left) abandons the request on its replica,
    which stops the pipeline call at its next step if no one else shares it."""
    try:
        async for event in stream.events():
            yield sse(event.model_dump_json(), event=event.type)
        yield sse("[DONE]")
        if stream.result is not None:
            result = stream.result
            notes.result(stream.model, (image.data for image in result.images), result.batch_images)
    except ServiceError as error:
        yield error_event(request, error, typed=True)
    except Exception:
        logger.exception("image stream failed")
        failure = ServiceError("the stream failed unexpectedly", code=ErrorCode.INTERNAL_ERROR)
        yield error_event(request, failure, typed=True)
    finally:
        await stream.aclose()


STREAM_RESPONSE = {
    200: {
        "description": "The images; with `stream: true`, server-sent events: "
        "`<kind>.partial_image` previews and one `<kind>.completed` per image (kind: "
        "image_generation or image_edit), then `data: [DONE]`; an error after the first "
        "event is an `error` event carrying the error envelope.",
        "content": {MEDIA_TYPE: {"schema": SSE_SCHEMA}},
    }
}


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    responses={**error_responses(400, 404), **STREAM_RESPONSE},
)
async def create_image(request: Request, body: ImageGenerationRequest, images: Images):
    notes = request_notes(request)
    notes.request(model=body.model, prompt=body.prompt)
    authorize_model(request, images.resolve_model(body.model, task=Task.TEXT_TO_IMAGE).name)
    if body.stream:
        return streamed_answer(request, await images.stream_generation(body), notes)
    response, result = await images.generate_images(body, str(request.base_url), tenant_of(request))
    notes.result(response.model, (image.data for image in result.images), result.batch_images)
    return images_answer(response, result)


@router.post(
    "/v1/images/edits",
    response_model=ImagesResponse,
    responses={**error_responses(400, 404, 413, 415), **STREAM_RESPONSE},
    description="Edit images by instruction. Send multipart/form-data as the OpenAI SDK "
    "does (files `image` or `image[]`, optional `mask`, and the other fields as form "
    "fields), or JSON: an ImageEditRequest with `images: [{image_url}]` (https or data "
    "URLs) or `[{b64_json}]`.",
    # The body is read by hand (two content types); serve_app.api.openapi describes both.
    openapi_extra={"x-edit-request-body": True},
)
async def edit_image(request: Request, images: Images):
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        body, uploads, mask = await read_edit_form(request, images.config.images.max_bytes)
    elif content_type == "application/json":
        body = parse_body(ImageEditRequest, await request.body())
        uploads, mask = [], None
    else:
        raise UnsupportedMediaTypeError(
            "send multipart/form-data or application/json",
            code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
    notes = request_notes(request)
    notes.request(model=body.model, prompt=body.prompt)
    authorize_model(request, images.resolve_model(body.model, task=Task.IMAGE_EDIT).name)
    if body.stream:
        return streamed_answer(request, await images.stream_edit(body, uploads, mask), notes)
    response, result = await images.edit_images(
        body, uploads, mask, str(request.base_url), tenant_of(request)
    )
    notes.result(response.model, (image.data for image in result.images), result.batch_images)
    return images_answer(response, result)
