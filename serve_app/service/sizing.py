"""Choosing and checking an image size against a model's limits."""

from __future__ import annotations

import math

from serve_app.config import ModelConfig, parse_size
from serve_app.errors import ErrorCode, InvalidRequestError


def size_from_aspect(hint: str, model: ModelConfig, multiple: int) -> tuple[int, int]:
    """A template's size is an aspect hint: keep its shape at the model's default area."""
    return size_for_aspect(*parse_size(hint), model, multiple)


def size_for_aspect(hint_w: int, hint_h: int, model: ModelConfig, multiple: int) -> tuple[int, int]:
    """The shape of hint_w x hint_h at the model's default area, within its limits."""
    default_w, default_h = parse_size(model.defaults.size)
    scale = math.sqrt(default_w * default_h / (hint_w * hint_h))
    limits = model.limits

    def fit(value: float) -> int:
        value = min(max(value, limits.min_side), limits.max_side)
        rounded = max(multiple, int(round(value / multiple)) * multiple)
        while rounded > limits.max_side:
            rounded -= multiple
        while rounded < limits.min_side:
            rounded += multiple
        return rounded

    width, height = fit(hint_w * scale), fit(hint_h * scale)
    # Rounding each side to the nearest multiple can overshoot the pixel budget.
    while width * height > limits.max_pixels:
        if width >= height and width - multiple >= limits.min_side:
            width -= multiple
        elif height - multiple >= limits.min_side:
            height -= multiple
        else:
            break
    return width, height


def check_size(width: int, height: int, model: ModelConfig, multiple: int) -> None:
    limits = model.limits
    problem = None
    if width % multiple or height % multiple:
        problem = f"width and height must be multiples of {multiple} for {model.family} models"
    elif min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        problem = f"each side must be between {limits.min_side} and {limits.max_side} pixels"
    elif width * height > limits.max_pixels:
        problem = f"at most {limits.max_pixels} pixels per image"
    if problem:
        raise InvalidRequestError(
            f"size {width}x{height} is not available for model {model.name!r}: {problem}",
            code=ErrorCode.INVALID_SIZE,
            param="size",
        )


def requested_size(size: str) -> tuple[int, int]:
    try:
        return parse_size(size)
    except ValueError:
        raise InvalidRequestError(
            f"size must be 'WIDTHxHEIGHT' or 'auto', got {size[:40]!r}",
            code=ErrorCode.INVALID_SIZE,
            param="size",
        ) from None
