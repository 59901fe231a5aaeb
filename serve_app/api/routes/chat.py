"""POST /v1/chat/completions (OpenAI's shape, whole or streamed), and GLM-4.6V-Flash-WEB's
/v1/multimodal/completions and /v1/multimodal/completions-multipart, which answer in the
same shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from serve_app.api.dependencies import Chat
from serve_app.api.errors import error_responses
from serve_app.api.middleware import request_notes
from serve_app.api.routes.images import FORM_TYPES, parse_body, read_form
from serve_app.api.sse import MEDIA_TYPE, SSE_HEADERS, SSE_SCHEMA, error_event, sse
from serve_app.api.tenancy import authorize_model
from serve_app.errors import ErrorCode, InvalidRequestError, ServiceError, UnsupportedMediaTypeError
from serve_app.models.chat_spec import ChatResult
from serve_app.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    MultimodalCompletionRequest,
    TextPart,
    UserMessage,
)

router = APIRouter(tags=["chat"])


def _last_user_text(body: ChatCompletionRequest) -> str | None:
    for message in reversed(body.messages):
        if isinstance(message, UserMessage):
            if isinstance(message.content, str):
                return message.content
            texts = [part.text for part in message.content if isinstance(part, TextPart)]
            return " ".join(texts) or None
    return None


def _note(request: Request, model: str, result: ChatResult) -> None:
    """Tokens and timings into the request's access-log line."""
    request_notes(request).chat_result(
        model,
        result.prompt_tokens,
        result.completion_tokens,
        result.first_token_s,
        result.generate_s,
        result.batch_rows,
    )


def _answer(request: Request, response: ChatCompletion, result: ChatResult) -> JSONResponse:
    _note(request, response.model, result)
    return JSONResponse(
        response.model_dump(exclude_none=True),
        headers={"x-batch-rows": str(result.batch_rows)},
    )


async def _event_stream(
    request: Request, first: ChatCompletionChunk, chunks: AsyncIterator[ChatCompletionChunk]
) -> AsyncIterator[bytes]:
    """SSE as the OpenAI SDK reads it; an error after the first chunk is an event with an
    `error` object (the status line has long gone). Closing it (the client left) closes
    the model's stream, which stops the request's generation."""
    try:
        yield sse(first.model_dump_json(exclude_none=True))
        async for chunk in chunks:
            yield sse(chunk.model_dump_json(exclude_none=True))
        yield sse("[DONE]")
    except ServiceError as error:
        yield error_event(request, error)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        **error_responses(400, 404, 413),
        200: {
            "description": "A chat completion; with `stream: true`, server-sent events of "
            "`chat.completion.chunk` objects ending with `data: [DONE]`.",
            # One schema per event: `data` is a chunk's JSON, an error's, or `[DONE]`.
            "content": {MEDIA_TYPE: {"schema": SSE_SCHEMA}},
        },
    },
)
async def create_chat_completion(request: Request, body: ChatCompletionRequest, chat: Chat):
    notes = request_notes(request)
    notes.request(model=body.model, prompt=_last_user_text(body))
    model = chat.resolve_model(body.model)
    authorize_model(request, model.name)
    notes.model = model.name
    if body.stream:
        chunks = chat.stream(body, on_result=lambda result: _note(request, model.name, result))
        # Refusals before the first token (limits, images, a full queue) are plain errors.
        first = await anext(chunks)
        return StreamingResponse(
            _event_stream(request, first, chunks),
            media_type=MEDIA_TYPE,
            headers=SSE_HEADERS,
        )
    response, result = await chat.complete(body)
    return _answer(request, response, result)


@router.post(
    "/v1/multimodal/completions",
    response_model=ChatCompletion,
    responses=error_responses(400, 404, 413),
    description="GLM-4.6V-Flash-WEB's request: one image as bare base64 (`image`) or "
    "`image_url`, and a `prompt`; answered as a chat completion.",
)
async def multimodal_completion(
    request: Request, body: MultimodalCompletionRequest, chat: Chat
) -> JSONResponse:
    return await _multimodal(request, body, None, chat)


@router.post(
    "/v1/multimodal/completions-multipart",
    response_model=ChatCompletion,
    responses=error_responses(400, 404, 413, 415),
    description="GLM-4.6V-Flash-WEB's form: an `image` file and a `prompt` (and optionally "
    "`model`, `max_tokens`, `temperature`, `top_p`, `seed`); answered as a chat completion.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["prompt"],
                        "additionalProperties": False,
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "prompt": {"type": "string", "minLength": 1, "maxLength": 64000},
                            "model": {"type": "string"},
                            "max_tokens": {"type": "integer", "minimum": 1},
                            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                        },
                    }
                }
            },
        }
    },
)
async def multimodal_completion_form(request: Request, chat: Chat) -> JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        raise UnsupportedMediaTypeError(
            "send multipart/form-data with an `image` file and a `prompt`",
            code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
    max_bytes = chat.image_inputs.limits.max_bytes
    fields, upload = await read_form(
        request,
        lambda form: split_multimodal_form(form, max_bytes),
        max_files=1,
        max_fields=16,
    )
    body = parse_body(MultimodalCompletionRequest, fields)
    return await _multimodal(request, body, upload, chat)


async def split_multimodal_form(
    form: FormData, max_image_bytes: int
) -> tuple[dict[str, str], bytes | None]:
    """(text fields, the `image` file's bytes); each field once, the image as a file."""
    fields: dict[str, str] = {}
    upload: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "image" or upload is not None:
                raise InvalidRequestError(
                    f"unexpected file field {key[:40]!r}; send one file named `image`",
                    code=ErrorCode.INVALID_FILE_FIELD,
                    param=key[:40],
                )
            # One byte over the image cap is enough for the decoder to answer 413.
            upload = await value.read(max_image_bytes + 1)
        elif key in fields or key == "image":
            raise InvalidRequestError(
                f"field {key[:40]!r} must be given once, and the image as a file",
                code=ErrorCode.INVALID_FORM_FIELD,
                param=key[:40],
            )
        else:
            fields[key] = value
    return fields, upload


async def _multimodal(
    request: Request, body: MultimodalCompletionRequest, upload: bytes | None, chat: Chat
) -> JSONResponse:
    notes = request_notes(request)
    notes.request(model=body.model, prompt=body.prompt)
    chat_request, source = chat.from_multimodal(body, upload)
    model = chat.resolve_model(body.model)
    authorize_model(request, model.name)
    notes.model = model.name
    response, result = await chat.complete_multimodal(chat_request, source)
    return _answer(request, response, result)
