"""Errors that cross component boundaries and end in the API's error envelope.

They live outside `serve_app.api` because the prompt templater and the model
replicas raise them too; they must pickle cleanly across Ray actor calls.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error with an HTTP status and an OpenAI-style type/code/param."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param

    def __reduce__(self):
        # Keyword-only arguments do not survive the default exception pickling.
        return (_rebuild, (type(self), self.message, self.code, self.param))


def _rebuild(cls, message, code, param):
    return cls(message, code=code, param=param)


class InvalidRequestError(ServiceError):
    status_code = 400
    error_type = "invalid_request_error"


class NotFoundError(ServiceError):
    status_code = 404
    error_type = "not_found_error"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    error_type = "invalid_request_error"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    error_type = "invalid_request_error"


class ServiceUnavailableError(ServiceError):
    status_code = 503
    error_type = "service_unavailable_error"
    retry_after_s = 1


class StorageError(ServiceUnavailableError):
    """503: the image store (local folder or S3) failed. The message never names the
    endpoint, bucket, path or credentials; callers may retry."""

    def __init__(
        self,
        message: str = "image storage is unavailable; retry shortly",
        *,
        code: str | None = "storage_unavailable",
        param: str | None = None,
    ):
        super().__init__(message, code=code, param=param)


class AuthenticationError(ServiceError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(ServiceError):
    status_code = 403
    error_type = "permission_error"


class ConflictError(ServiceError):
    """409: e.g. an Idempotency-Key whose first request is still being processed."""

    status_code = 409
    error_type = "conflict_error"
    retry_after_s = 1


class UnprocessableError(ServiceError):
    """422: e.g. an Idempotency-Key reused with a different body."""

    status_code = 422
    error_type = "invalid_request_error"


class RateLimitError(ServiceError):
    status_code = 429
    error_type = "rate_limit_error"
    retry_after_s = 1


class GatewayTimeoutError(ServiceError):
    """504: the Gateway's own deadline for a request passed."""

    status_code = 504
    error_type = "timeout_error"
