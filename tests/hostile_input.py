"""Hostile input, as hypothesis strategies: mutated image files, arbitrary JSON, valid
bodies of every JSON route with one field replaced, and values that try to break out of a
template. The unit fuzz tests (tests/unit/test_fuzz.py) run them in-process; the
reliability campaign sends them to the deployed service."""

from __future__ import annotations

import io
import json

from hypothesis import strategies as st
from PIL import Image


def sample(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((24, 16)).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


SAMPLES = {fmt: sample(fmt) for fmt in ("PNG", "JPEG", "WEBP")}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
            if not data:
                break
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at : at + draw(st.integers(1, 32))] = b"\0" * 32
    return bytes(data)


ROUTES = (
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/jobs",
    "/v1/batches",
    "/v1/chat/completions",
)
VALID = {
    "/v1/images/generations": {"model": "sd-tiny", "prompt": "a chair", "size": "64x64"},
    "/v1/images/edits": {
        "model": "sd-tiny",
        "prompt": "blue",
        "images": [{"b64_json": "aGVsbG8="}],
    },
    "/v1/jobs": {
        "type": "image_generation",
        "request": {"model": "sd-tiny", "prompt": "a chair", "size": "64x64"},
    },
    "/v1/batches": {
        "jobs": [
            {
                "type": "image_generation",
                "request": {"model": "sd-tiny", "prompt": "a chair", "size": "64x64"},
            }
        ]
    },
    "/v1/chat/completions": {"model": "sd-tiny", "messages": [{"role": "user", "content": "hi"}]},
}
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "\0", "{prompt}", "{0.__class__}", "%s%n", "\u202e", "64x64x64"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def near_valid(draw) -> tuple[str, dict]:
    """A valid body of some route with one field replaced (or added) by any JSON value."""
    route = draw(st.sampled_from(ROUTES))
    body = json.loads(json.dumps(VALID[route]))
    target = body["request"] if route == "/v1/jobs" else body
    field = draw(st.sampled_from([*target, "n", "seed", "steps", "style", "variables", "x"]))
    target[field] = draw(JSON_VALUES)
    return route, body


# Format fields, conversions and specs, Jinja and shell syntax, unbalanced braces, another
# variable's name, control and bidi characters: all of it must come out as plain text.
BREAKOUTS = st.sampled_from(
    [
        "{prompt}",
        "{product_name}",
        "{0.__class__.__mro__}",
        "{x!r}",
        "{x:>99999999}",
        "{{",
        "}}",
        "}{",
        "{{ 7*7 }}",
        "{% for x in y %}",
        "${HOME}",
        "%s%n%x",
        "\0\x1b[2J",
        "\u202e\u2066",
        "\r\n\t",
    ]
)
VALUES = st.text(max_size=120) | BREAKOUTS | st.lists(BREAKOUTS | st.text(max_size=8)).map("".join)
