"""GET /files/{key}: a stored image behind an expiring signature (local storage only; S3
hands out its own presigned URLs)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from serve_app.api.dependencies import Images
from serve_app.api.errors import error_responses
from serve_app.errors import ErrorCode, NotFoundError, PermissionDeniedError
from serve_app.storage import LocalStorage
from serve_app.storage.keys import CONTENT_TYPES, content_type

router = APIRouter(tags=["files"])


@router.get(
    "/files/{key:path}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The image.",
            "content": {media_type: {} for media_type in CONTENT_TYPES.values()},
        },
        **error_responses(403, 404),
    },
)
async def get_file(
    key: str,
    images: Images,
    expires: int = Query(...),
    sig: str = Query(..., max_length=128),
) -> FileResponse:
    storage = images.storage
    if not isinstance(storage, LocalStorage):  # other backends hand out their own URLs
        raise NotFoundError("no such file", code=ErrorCode.FILE_NOT_FOUND)
    if not storage.signer.verify(key, expires, sig):
        raise PermissionDeniedError(
            "the link is invalid or has expired", code=ErrorCode.INVALID_SIGNATURE
        )
    path = storage.path_for(key)
    if path is None:
        raise NotFoundError("no such file", code=ErrorCode.FILE_NOT_FOUND)
    return FileResponse(
        path,
        media_type=content_type(key),
        headers={
            "Cache-Control": f"private, max-age={storage.signer.ttl_s}",
            "X-Content-Type-Options": "nosniff",
        },
    )
