"""A template engine that can only substitute named variables.

`{product_name}` is replaced by the value given; `{{` and `}}` are literal braces.
Attribute or index access (`{a.b}`, `{a[0]}`), conversions (`{a!r}`), format specs
(`{a:>10}`) and positional fields (`{}`) are rejected when a template is loaded,
so a template can never reach into an object or run code. Values are inserted
as plain text and never parsed again.
"""

from __future__ import annotations

import re
import string

from serve_app.errors import ErrorCode, InvalidRequestError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_FORMATTER = string.Formatter()


class TemplateSyntaxError(ValueError):
    pass


def template_fields(text: str) -> list[str]:
    """The variable names a template uses, in order; raises on anything but plain names."""
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as error:  # unbalanced braces
        raise TemplateSyntaxError(f"{error} in template {text[:60]!r}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not IDENTIFIER.fullmatch(field) or spec or conversion:
            shown = (
                "{"
                + field
                + ("!" + conversion if conversion else "")
                + (":" + spec if spec else "")
                + "}"
            )
            raise TemplateSyntaxError(
                f"only plain {{name}} fields are allowed in templates, found {shown}"
            )
        if field not in names:
            names.append(field)
    return names


def render_template(text: str, values: dict[str, str]) -> str:
    """Substitute every field; a missing one is a 400 that names it."""
    parts: list[str] = []
    for literal, field, _, _ in _FORMATTER.parse(text):
        parts.append(literal)
        if field is None:
            continue
        if field not in values:
            raise InvalidRequestError(
                f"template variable {field!r} is missing",
                code=ErrorCode.MISSING_VARIABLE,
                param=f"variables.{field}",
            )
        parts.append(values[field])
    return "".join(parts)
