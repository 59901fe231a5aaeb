"""Errors that cross component boundaries and end in the API's error envelope.

They live outside `serve_app.api` because the prompt templater and the model
replicas raise them too; they must pickle cleanly across Ray actor calls.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every `error.code` the service answers with (and a failed job records)."""

    ANONYMOUS_ACCESS_REFUSED = "anonymous_access_refused"
    BANNED_TERM = "banned_term"
    BATCH_NOT_FOUND = "batch_not_found"
    BODY_TOO_LARGE = "body_too_large"
    BRAND_NOT_FOUND = "brand_not_found"
    CANCELED = "canceled"
    CONCURRENCY_LIMIT_EXCEEDED = "concurrency_limit_exceeded"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    DATABASE_UNAVAILABLE = "database_unavailable"
    EMPTY_PROMPT = "empty_prompt"
    FILE_NOT_FOUND = "file_not_found"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IMAGE_METADATA_TOO_LARGE = "image_metadata_too_large"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TRUNCATED = "image_truncated"
    IMAGE_URL_FETCH_FAILED = "image_url_fetch_failed"
    IMAGE_URL_FORBIDDEN = "image_url_forbidden"
    IMAGE_URL_INVALID = "image_url_invalid"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    INTERNAL_ERROR = "internal_error"
    INVALID_API_KEY = "invalid_api_key"
    INVALID_AUTHORIZATION_HEADER = "invalid_authorization_header"
    INVALID_BASE64 = "invalid_base64"
    INVALID_FILE_FIELD = "invalid_file_field"
    INVALID_FORM = "invalid_form"
    INVALID_FORM_FIELD = "invalid_form_field"
    INVALID_GUIDANCE_SCALE = "invalid_guidance_scale"
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    INVALID_IMAGE = "invalid_image"
    INVALID_JSON = "invalid_json"
    INVALID_LORA_SCALE = "invalid_lora_scale"
    INVALID_MAX_TOKENS = "invalid_max_tokens"
    INVALID_MESSAGES = "invalid_messages"
    INVALID_N = "invalid_n"
    INVALID_PARAMETER = "invalid_parameter"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_SIZE = "invalid_size"
    INVALID_STEPS = "invalid_steps"
    JOB_NOT_CANCELABLE = "job_not_cancelable"
    JOB_NOT_FOUND = "job_not_found"
    JOB_NOT_RETRYABLE = "job_not_retryable"
    LORA_MODEL_MISMATCH = "lora_model_mismatch"
    LORA_NOT_FOUND = "lora_not_found"
    LORA_UNAVAILABLE = "lora_unavailable"
    MASK_SIZE_MISMATCH = "mask_size_mismatch"
    MISSING_API_KEY = "missing_api_key"
    MISSING_IMAGE = "missing_image"
    MISSING_VARIABLE = "missing_variable"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_OUT_OF_MEMORY = "model_out_of_memory"
    MODEL_OVERLOADED = "model_overloaded"
    MODEL_TASK_MISMATCH = "model_task_mismatch"
    MODEL_TIMEOUT = "model_timeout"
    MODEL_UNAVAILABLE = "model_unavailable"
    PROMPT_TOO_LONG = "prompt_too_long"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    RATE_LIMITER_UNAVAILABLE = "rate_limiter_unavailable"
    REPLICA_UNAVAILABLE = "replica_unavailable"
    REQUEST_TIMEOUT = "request_timeout"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    STYLE_NOT_FOUND = "style_not_found"
    TEMPLATE_NOT_FOUND = "template_not_found"
    TOO_MANY_IMAGES = "too_many_images"
    TOO_MANY_JOBS = "too_many_jobs"
    TOO_MANY_LORAS = "too_many_loras"
    TOO_MANY_STOP_SEQUENCES = "too_many_stop_sequences"
    UNEXPECTED_VARIABLES = "unexpected_variables"
    UNKNOWN_VARIABLE = "unknown_variable"
    UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    URL_FORBIDDEN = "url_forbidden"
    URL_INVALID = "url_invalid"
    URL_UNRESOLVABLE = "url_unresolvable"
    VARIABLE_TOO_LONG = "variable_too_long"
    WEBHOOKS_NOT_CONFIGURED = "webhooks_not_configured"
    WORKER_LOST = "worker_lost"


class ServiceError(Exception):
    """An error with an HTTP status and an OpenAI-style type/code/param."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, code: ErrorCode | None = None, param: str | None = None):
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


class DatabaseUnavailableError(ServiceUnavailableError):
    """503: the job or key store's database did not answer (down, restarting, out of
    reach). The message never names its address; callers may retry."""

    def __init__(self, message: str = "the service's database is unavailable; retry shortly"):
        super().__init__(message, code=ErrorCode.DATABASE_UNAVAILABLE)


class StorageError(ServiceUnavailableError):
    """503: the image store (local folder or S3) failed. The message never names the
    endpoint, bucket, path or credentials; callers may retry."""

    def __init__(
        self,
        message: str = "image storage is unavailable; retry shortly",
        *,
        code: ErrorCode | None = ErrorCode.STORAGE_UNAVAILABLE,
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


class RequestCancelledError(ServiceError):
    """The caller went away, or its job was canceled, while its images were being made
    (nginx's 499: nobody is left to read this answer)."""

    status_code = 499
    error_type = "request_cancelled"


class GatewayTimeoutError(ServiceError):
    """504: the Gateway's own deadline for a request passed."""

    status_code = 504
    error_type = "timeout_error"
