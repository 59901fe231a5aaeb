"""Templates, style presets and brand guides from configs/templates.yaml, and how a
request's prompt is put together from them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.errors import ErrorCode, InvalidRequestError
from serve_app.prompts.engine import render_template, template_fields

NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class CatalogModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateVariable(CatalogModel):
    description: str = ""
    required: bool = True
    default: str | None = None
    example: str | None = None
    max_length: int = Field(300, ge=1, le=4000)


class PromptTemplate(CatalogModel):
    name: str = Field(pattern=NAME)
    title: str
    category: str = "general"
    description: str = ""
    prompt: str
    negative_prompt: str | None = None
    variables: dict[str, TemplateVariable] = {}
    # Used when the request names no style / size of its own.
    style: str | None = None
    size: str | None = None

    @model_validator(mode="after")
    def _fields_declared(self) -> PromptTemplate:
        used = set(template_fields(self.prompt))
        if self.negative_prompt:
            used |= set(template_fields(self.negative_prompt))
        used.discard("prompt")  # the request's own prompt, always available
        undeclared = used - set(self.variables)
        if undeclared:
            raise ValueError(
                f"template {self.name!r} uses undeclared variables {sorted(undeclared)}"
            )
        return self


class StylePreset(CatalogModel):
    name: str = Field(pattern=NAME)
    title: str
    description: str = ""
    prompt_suffix: str
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)


class BrandGuide(CatalogModel):
    name: str = Field(pattern=NAME)
    title: str
    description: str = ""
    palette: list[str] = []
    banned_terms: list[str] = []

    @model_validator(mode="after")
    def _hex_palette(self) -> BrandGuide:
        for colour in self.palette:
            if not re.match(r"^#[0-9A-Fa-f]{6}$", colour):
                raise ValueError(f"brand {self.name!r}: palette colour {colour!r} is not #RRGGBB")
        return self


class PromptRequest(CatalogModel):
    """The prompt-related part of a generation request."""

    prompt: str
    negative_prompt: str | None = None
    template: str | None = None
    # None: not given (given without a template, it is refused).
    variables: dict[str, str] | None = None
    style: str | None = None
    brand: str | None = None


class RenderedPrompt(CatalogModel):
    prompt: str
    negative_prompt: str | None
    # Defaults contributed by the template or style, applied when the request sets none.
    size: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None


class PromptCatalog(CatalogModel):
    templates: list[PromptTemplate] = []
    styles: list[StylePreset] = []
    brands: list[BrandGuide] = []

    @model_validator(mode="after")
    def _references_exist(self) -> PromptCatalog:
        for kind, items in (
            ("template", self.templates),
            ("style", self.styles),
            ("brand", self.brands),
        ):
            names = [item.name for item in items]
            if len(names) != len(set(names)):
                raise ValueError(f"{kind} names must be unique")
        styles = {style.name for style in self.styles}
        for template in self.templates:
            if template.style and template.style not in styles:
                raise ValueError(
                    f"template {template.name!r} names unknown style {template.style!r}"
                )
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> PromptCatalog:
        with open(path, encoding="utf-8") as handle:
            return cls.model_validate(yaml.safe_load(handle) or {})

    def render(self, request: PromptRequest) -> RenderedPrompt:
        check_prompt_request(request)
        prompt = request.prompt.strip()
        negatives = [request.negative_prompt] if request.negative_prompt else []
        size = None
        style_name = request.style

        if request.template is not None:
            template = self._find(self.templates, request.template, "template")
            prompt = self._render_template(template, request)
            if template.negative_prompt:
                negatives.append(
                    _tidy(self._render_text(template.negative_prompt, template, request))
                )
            size = template.size
            style_name = style_name or template.style
        if not prompt:
            raise _empty_prompt()

        steps = guidance_scale = None
        if style_name is not None:
            style = self._find(self.styles, style_name, "style")
            prompt = f"{prompt}, {style.prompt_suffix}"
            if style.negative_prompt:
                negatives.append(style.negative_prompt)
            steps, guidance_scale = style.steps, style.guidance_scale

        if request.brand is not None:
            brand = self._find(self.brands, request.brand, "brand")
            self._refuse_banned_terms(brand, prompt)
            additions = [brand.description] if brand.description else []
            if brand.palette:
                additions.append("color palette " + ", ".join(brand.palette))
            if additions:
                prompt = f"{prompt}, {', '.join(additions)}"

        return RenderedPrompt(
            prompt=prompt,
            negative_prompt=", ".join(negatives) if negatives else None,
            size=size,
            steps=steps,
            guidance_scale=guidance_scale,
        )

    @staticmethod
    def _find(items, name: str, kind: str):
        for item in items:
            if item.name == name:
                return item
        known = ", ".join(item.name for item in items) or "none"
        raise InvalidRequestError(
            f"unknown {kind} {name!r}; available: {known}",
            code=ErrorCode(f"{kind}_not_found"),
            param=kind,
        )

    def _values(self, template: PromptTemplate, request: PromptRequest) -> dict[str, str]:
        given = request.variables or {}
        unknown = set(given) - set(template.variables)
        if unknown:
            raise InvalidRequestError(
                f"template {template.name!r} has no variable(s) {sorted(unknown)}; "
                f"it takes {sorted(template.variables)}",
                code=ErrorCode.UNKNOWN_VARIABLE,
                param="variables",
            )
        values = {"prompt": request.prompt.strip()}
        for name, spec in template.variables.items():
            value = given.get(name, spec.default)
            if value is None:
                if spec.required:
                    continue  # render_template reports it by name
                value = ""
            if len(value) > spec.max_length:
                raise InvalidRequestError(
                    f"variable {name!r} is longer than {spec.max_length} characters",
                    code=ErrorCode.VARIABLE_TOO_LONG,
                    param=f"variables.{name}",
                )
            values[name] = value.strip()
        return values

    def _render_text(self, text: str, template: PromptTemplate, request: PromptRequest) -> str:
        return render_template(text, self._values(template, request))

    def _render_template(self, template: PromptTemplate, request: PromptRequest) -> str:
        rendered = _tidy(self._render_text(template.prompt, template, request))
        extra = request.prompt.strip()
        if extra and "prompt" not in template_fields(template.prompt):
            rendered = f"{rendered}, {extra}"
        return rendered

    @staticmethod
    def _refuse_banned_terms(brand: BrandGuide, prompt: str) -> None:
        for term in brand.banned_terms:
            if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", prompt, flags=re.IGNORECASE):
                raise InvalidRequestError(
                    f"the prompt uses {term!r}, which brand {brand.name!r} does not allow",
                    code=ErrorCode.BANNED_TERM,
                    param="prompt",
                )


def _tidy(text: str) -> str:
    """Drop the empty list items an unset optional variable leaves (', ,') and extra spaces."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    return text.strip(" ,")


def check_prompt_request(request: PromptRequest) -> None:
    """What is refused before any template is looked up (a job at submission, too): a blank
    prompt with no template to make one, and variables with no template to fill."""
    if request.template is not None:
        return
    if request.variables is not None:
        raise InvalidRequestError(
            "variables are only used with a template",
            code=ErrorCode.UNEXPECTED_VARIABLES,
            param="variables",
        )
    if not request.prompt.strip():
        raise _empty_prompt()


def _empty_prompt() -> InvalidRequestError:
    return InvalidRequestError(
        "prompt must not be empty", code=ErrorCode.EMPTY_PROMPT, param="prompt"
    )


def catalog_listing(catalog: PromptCatalog) -> dict[str, list[dict]]:
    """What /v1/templates and /v1/styles show: enough to build a drop-down and a form."""
    return {
        "templates": [
            template.model_dump(exclude={"prompt", "negative_prompt"})
            for template in catalog.templates
        ],
        "styles": [
            style.model_dump(exclude={"prompt_suffix", "negative_prompt"})
            for style in catalog.styles
        ],
        "brands": [brand.model_dump() for brand in catalog.brands],
    }
