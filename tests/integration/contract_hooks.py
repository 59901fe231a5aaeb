"""Schemathesis hooks for tests/integration/test_openapi_contract.py (loaded through
SCHEMATHESIS_HOOKS by the schemathesis process).

The built-in positive_data_acceptance check wants every schema-valid request accepted. Some
refusals depend on what no static schema can say: the chosen model's limits, the bytes of
an image, whether a URL resolves, the catalog's templates, the deployment's size limits,
and what earlier requests did with an Idempotency-Key. This check allows exactly those, by
error code; any other refusal of a schema-valid request is a contract mismatch.
"""

from __future__ import annotations

import schemathesis

# Refusals that depend on more than the request's shape.
SEMANTIC_CODES = frozenset(
    {
        # The model chosen: its limits and capabilities (/v1/models lists them).
        "invalid_n",
        "invalid_steps",
        "invalid_size",
        "invalid_guidance_scale",
        "prompt_too_long",
        "unsupported_parameter",
        "model_task_mismatch",
        "too_many_images",
        "invalid_max_tokens",
        "too_many_stop_sequences",
        "context_length_exceeded",
        # A vision-chat model's tokenizer (text spelling its control tokens) and what its
        # constrained decoding can enforce of a JSON schema.
        "invalid_messages",
        "unsupported_schema",
        # The LoRA catalog (/v1/loras) and the model's adapter limits.
        "lora_not_found",
        "lora_model_mismatch",
        "too_many_loras",
        "invalid_lora_scale",
        # The catalog (/v1/templates, /v1/styles).
        "template_not_found",
        "style_not_found",
        "brand_not_found",
        "missing_variable",
        "unknown_variable",
        "variable_too_long",
        "banned_term",
        # The image bytes, or what a URL leads to.
        "invalid_image",
        "invalid_base64",
        "image_truncated",
        "image_metadata_too_large",
        "image_too_large",
        "unsupported_image_format",
        "mask_size_mismatch",
        "image_url_invalid",
        "image_url_forbidden",
        "image_url_fetch_failed",
        "url_invalid",
        "url_forbidden",
        "url_unresolvable",
        # The deployment's limits.
        "body_too_large",
        "too_many_jobs",
        # Earlier requests.
        "idempotency_key_reused",
        "job_not_cancelable",
    }
)
# schemathesis 4.32 does not apply an `anyOf` of `required` alternatives to a multipart
# body (the edit form's `image` or `image[]`), so it sends forms without either.
MULTIPART_GENERATOR_GAPS = frozenset({"missing_image"})
# Statuses positive_data_acceptance allows anyway (a missing resource, a busy key, limits);
# 5xx is the not_a_server_error check's.
ALLOWED_STATUSES = frozenset({401, 403, 404, 409, 429})


@schemathesis.check
def schema_valid_requests_are_refused_only_for_semantic_reasons(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ALLOWED_STATUSES:
        return None
    try:
        code = response.json()["error"]["code"]
    except Exception:
        code = None
    multipart = case.media_type == "multipart/form-data"
    if code in SEMANTIC_CODES or (multipart and code in MULTIPART_GENERATOR_GAPS):
        return None
    raise AssertionError(
        f"a schema-valid request was refused with {status} {code!r}: the schema does not "
        f"say what the service accepts\n{response.text[:500]}"
    )
