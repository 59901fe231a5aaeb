"""Structured answers: a `response_format` turned into a grammar that constrained decoding
enforces, so the answer parses (and matches the schema) whatever the model's weights.

llguidance compiles JSON schemas lazily into a token-level parser: a 3 MB wheel with no
dependencies (xgrammar pulls in triton, a gigabyte on a CPU machine), masks in tens of
microseconds per token, and it refuses the schema keywords it cannot enforce by name,
which becomes the 400 a client sees. The Gateway validates here (no torch); the replica
builds a matcher per row from the same grammar.
"""

from __future__ import annotations

import json
from typing import Any

from llguidance import LLMatcher

from serve_app.errors import ErrorCode, InvalidRequestError

# `json_object`: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}
# Compact JSON: a model (a random-weight one especially) cannot spend its whole token
# budget on white space inside an answer that must still close.
_OPTIONS = {"whitespace_flexible": False}


def json_grammar(schema: dict[str, Any], param: str) -> str:
    """A grammar for answers valid against `schema`; a 400 naming what llguidance cannot
    enforce (a keyword, a format), at `param`."""
    try:
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=_OPTIONS)
        failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as error:  # llguidance's own errors: the schema is the client's
        raise InvalidRequestError(
            f"the JSON schema cannot be used: {str(error)[:300]}",
            code=ErrorCode.UNSUPPORTED_SCHEMA,
            param=param,
        ) from None
    if failed:
        detail = "; ".join(messages)[:300] or "rejected"
        raise InvalidRequestError(
            f"the JSON schema uses what constrained decoding cannot enforce: {detail}",
            code=ErrorCode.UNSUPPORTED_SCHEMA,
            param=param,
        )
    return grammar
