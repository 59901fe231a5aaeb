"""Which configured model a request means."""

from __future__ import annotations

from serve_app.config import AppConfig, ModelConfig
from serve_app.errors import ErrorCode, InvalidRequestError, NotFoundError
from serve_app.families import Task


def resolve_model(config: AppConfig, name: str | None, task: Task | None = None) -> ModelConfig:
    """The named model (404 if unknown), or the first one for `task` if unnamed."""
    candidates = [m for m in config.models if task is None or m.task == task]
    if name is None:
        if not candidates:
            raise NotFoundError(
                f"no {task} model is configured", code=ErrorCode.MODEL_NOT_FOUND, param="model"
            )
        return candidates[0]
    model = config.model(name)
    if model is None:
        known = ", ".join(m.name for m in candidates)
        raise NotFoundError(
            f"model {name!r} does not exist; available: {known}",
            code=ErrorCode.MODEL_NOT_FOUND,
            param="model",
        )
    if task is not None and model.task != task:
        known = ", ".join(m.name for m in candidates) or "none"
        raise InvalidRequestError(
            f"model {name!r} is a {model.task} model; {task} models: {known}",
            code=ErrorCode.MODEL_TASK_MISMATCH,
            param="model",
        )
    return model
