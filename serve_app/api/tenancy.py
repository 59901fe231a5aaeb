"""Who is calling: the seam between authentication and the routes that scope data.

Authentication (API keys) sets `request.state.principal`, an object with a `tenant`
name and an `allows_model(name) -> bool` method. Routes ask only these two functions,
so they read the same with keys switched off (the embedded default on 127.0.0.1),
where every caller is the `default` tenant and may use every model.
"""

from __future__ import annotations

from fastapi import Request

from serve_app.errors import ErrorCode, PermissionDeniedError

DEFAULT_TENANT = "default"


def tenant_of(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    return principal.tenant if principal is not None else DEFAULT_TENANT


def may_use_model(request: Request, model_name: str) -> bool:
    principal = getattr(request.state, "principal", None)
    return principal is None or principal.allows_model(model_name)


def authorize_model(request: Request, model_name: str) -> None:
    """403 unless the caller's key may use this model."""
    if not may_use_model(request, model_name):
        raise PermissionDeniedError(
            f"this API key may not use model {model_name!r}",
            code=ErrorCode.MODEL_NOT_ALLOWED,
            param="model",
        )
