"""The safe template engine and the prompt catalog, against the real configs/templates.yaml."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.errors import InvalidRequestError
from serve_app.prompts import (
    PromptCatalog,
    PromptRequest,
    catalog_listing,
    render_template,
    template_fields,
)
from serve_app.prompts.engine import TemplateSyntaxError

TEMPLATES_YAML = Path(__file__).resolve().parents[2] / "configs" / "templates.yaml"


@pytest.fixture(scope="module")
def catalog() -> PromptCatalog:
    return PromptCatalog.from_yaml(TEMPLATES_YAML)


def one_template(prompt: str, variables: dict | None = None, **extra) -> dict:
    template = {"name": "t", "title": "T", "prompt": prompt, **extra}
    template["variables"] = variables if variables is not None else {"a": {}}
    return {"templates": [template]}


def render(catalog: PromptCatalog, **fields):
    fields.setdefault("prompt", "")
    return catalog.render(PromptRequest(**fields))


@contextmanager
def raises_invalid(code: str, param: str | None = None):
    """An InvalidRequestError with this code (and param) must be raised inside the block."""
    with pytest.raises(InvalidRequestError) as info:
        yield info
    assert info.value.code == code, info.value
    if param is not None:
        assert info.value.param == param


# --- engine -------------------------------------------------------------------------------


def test_plain_name_is_substituted():
    assert render_template("a {thing} here", {"thing": "mug"}) == "a mug here"


def test_fields_are_listed_once_in_order():
    assert template_fields("{b} {a} {b} {c}") == ["b", "a", "c"]


def test_double_braces_are_literal_braces():
    assert template_fields("{{not_a_field}} {x}") == ["x"]
    assert render_template("{{x}} = {x}", {"x": "1"}) == "{x} = 1"


@pytest.mark.parametrize(
    "text",
    [
        "{a.b}",
        "{a.__class__}",
        "{a[0]}",
        "{a[key]}",
        "{a!r}",
        "{a!s}",
        "{a:>9}",
        "{a:{b}}",
        "{}",
        "{0}",
        "{ a}",
        "{a",
        "a}",
        "{a}{",
        "}{",
    ],
)
def test_engine_rejects_anything_but_plain_names(text):
    with pytest.raises(TemplateSyntaxError):
        template_fields(text)


def test_engine_rejects_field_name_with_trailing_newline():
    with pytest.raises(TemplateSyntaxError):
        template_fields("{a\n}")


def test_missing_variable_is_named():
    with raises_invalid("missing_variable", "variables.colour") as info:
        render_template("a {colour} mug", {})
    assert "colour" in info.value.message


def test_values_with_braces_are_inserted_literally():
    assert render_template("{a} and {b}", {"a": "{b}", "b": "{{x}} {0.__class__}"}) == (
        "{b} and {{x}} {0.__class__}"
    )


# --- loading a catalog ----------------------------------------------------------------------


def test_real_catalog_loads(catalog):
    assert {t.name for t in catalog.templates} >= {"product-main-shot", "design-asset"}
    assert {s.name for s in catalog.styles} >= {"photorealistic", "flat-illustration"}
    assert {b.name for b in catalog.brands} == {"acme-retail", "northwind"}


@pytest.mark.parametrize(
    "prompt",
    ["{a.b}", "{a[0]}", "{a!r}", "{a:>9}", "{}", "x {a", "x a}", "{a.__init__.__globals__}"],
)
def test_catalog_rejects_unsafe_template_at_load(prompt):
    with pytest.raises(ValidationError):
        PromptCatalog.model_validate(one_template(prompt))


def test_catalog_rejects_unsafe_negative_prompt_at_load():
    with pytest.raises(ValidationError):
        PromptCatalog.model_validate(one_template("{a}", negative_prompt="{a.b}"))


def test_catalog_rejects_undeclared_variable():
    with pytest.raises(ValidationError, match="undeclared"):
        PromptCatalog.model_validate(one_template("{a} {b}"))


def test_catalog_rejects_unknown_template_style():
    with pytest.raises(ValidationError, match="unknown style"):
        PromptCatalog.model_validate(one_template("{a}", style="nope"))


def test_catalog_rejects_duplicate_names():
    data = one_template("{a}")
    data["templates"].append(dict(data["templates"][0]))
    with pytest.raises(ValidationError, match="unique"):
        PromptCatalog.model_validate(data)


def test_catalog_rejects_bad_palette_colour():
    with pytest.raises(ValidationError, match="#RRGGBB"):
        PromptCatalog.model_validate({"brands": [{"name": "b", "title": "B", "palette": ["red"]}]})


def test_catalog_accepts_literal_braces_and_prompt_field():
    catalog = PromptCatalog.model_validate(one_template("{{logo}} {a} {prompt}"))
    rendered = render(catalog, template="t", variables={"a": "x"}, prompt="y")
    assert rendered.prompt == "{logo} x y"


# --- rendering ------------------------------------------------------------------------------


def test_plain_prompt_passes_through_stripped(catalog):
    rendered = render(catalog, prompt="  a red bicycle  ")
    assert rendered.prompt == "a red bicycle"
    assert rendered.negative_prompt is None
    assert (rendered.size, rendered.steps, rendered.guidance_scale) == (None, None, None)


def test_prompt_with_braces_and_no_template_is_untouched(catalog):
    assert render(catalog, prompt="a {sign} saying {{hi}}").prompt == "a {sign} saying {{hi}}"


def test_template_renders_with_defaults_style_and_negatives(catalog):
    rendered = render(catalog, template="product-main-shot", variables={"product_name": "a mug"})
    assert rendered.prompt == (
        "professional e-commerce main image of a mug, centered, plain white background, "
        "soft studio lighting, sharp focus, high detail, "
        "photorealistic, 85mm lens, natural colours, high dynamic range"
    )
    assert rendered.negative_prompt == (
        "text, watermark, logo, cluttered background, cropped product, "
        "cartoon, painting, illustration, lowres, blurry"
    )
    assert rendered.size == "1024x1024"


def test_optional_variable_overrides_default(catalog):
    rendered = render(
        catalog,
        template="product-main-shot",
        variables={"product_name": "a mug", "material": "matte glaze", "background": "grey"},
    )
    assert "of a mug, matte glaze, centered, plain grey background" in rendered.prompt


def test_template_appends_request_prompt(catalog):
    rendered = render(
        catalog,
        template="product-detail-shot",
        variables={"product_name": "a wallet", "feature": "stitching"},
        prompt="on dark wood",
    )
    assert rendered.prompt.startswith(
        "macro close-up of the stitching of a wallet, studio lighting, "
        "crisp texture detail, on dark wood, photorealistic"
    )


def test_variable_values_with_braces_are_not_reparsed(catalog):
    rendered = render(
        catalog,
        template="product-main-shot",
        variables={"product_name": "{material} {0.__class__} {{x}}", "material": "steel"},
    )
    assert "main image of {material} {0.__class__} {{x}}, steel, centered" in rendered.prompt


def test_missing_required_variable_names_it(catalog):
    with raises_invalid("missing_variable", "variables.product_name") as info:
        render(catalog, template="product-main-shot", variables={"material": "steel"})
    assert "product_name" in info.value.message


def test_unknown_variable_is_refused(catalog):
    with raises_invalid("unknown_variable", "variables") as info:
        render(
            catalog,
            template="product-main-shot",
            variables={"product_name": "a mug", "colour": "red"},
        )
    assert "colour" in info.value.message
    assert "product_name" in info.value.message


def test_variables_without_template_are_refused(catalog):
    with raises_invalid("unexpected_variables", "variables"):
        render(catalog, prompt="a mug", variables={"product_name": "a mug"})


@pytest.mark.parametrize(
    ("field", "name", "known"),
    [
        ("template", "nope", "product-main-shot"),
        ("style", "nope", "watercolor"),
        ("brand", "nope", "acme-retail"),
    ],
)
def test_unknown_catalog_entry_lists_available_names(catalog, field, name, known):
    with raises_invalid(f"{field}_not_found", field) as info:
        render(catalog, prompt="a mug", **{field: name})
    assert "'nope'" in info.value.message
    assert known in info.value.message


def test_unknown_entry_in_empty_catalog_says_none():
    with raises_invalid("style_not_found") as info:
        render(PromptCatalog(), prompt="x", style="anime")
    assert "available: none" in info.value.message


def test_variable_too_long(catalog):
    with raises_invalid("variable_too_long", "variables.product_name"):
        render(catalog, template="product-main-shot", variables={"product_name": "x" * 301})


def test_variable_at_max_length_is_fine(catalog):
    rendered = render(catalog, template="product-main-shot", variables={"product_name": "x" * 300})
    assert "x" * 300 in rendered.prompt


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_without_template_is_refused(catalog, prompt):
    with raises_invalid("empty_prompt", "prompt"):
        render(catalog, prompt=prompt)


def test_empty_prompt_with_template_is_fine(catalog):
    rendered = render(catalog, template="design-asset", variables={"subject": "a cart icon"})
    assert rendered.prompt.startswith("a cart icon, design system asset")


def test_style_adds_suffix_negative_steps(catalog):
    rendered = render(catalog, prompt="a fox", negative_prompt="blurry", style="anime")
    assert rendered.prompt == "a fox, anime style, cel shading, vibrant colours"
    assert rendered.negative_prompt == "blurry, photo, photorealistic, lowres"


def test_style_steps_and_guidance_are_passed_on():
    catalog = PromptCatalog.model_validate(
        {
            "styles": [
                {"name": "s", "title": "S", "prompt_suffix": "x", "steps": 7, "guidance_scale": 2.5}
            ]
        }
    )
    rendered = render(catalog, prompt="a fox", style="s")
    assert (rendered.steps, rendered.guidance_scale) == (7, 2.5)


def test_request_style_overrides_template_default_style(catalog):
    rendered = render(
        catalog,
        template="report-section-illustration",
        variables={"section_title": "Q3", "topic": "logistics"},
        style="watercolor",
    )
    assert rendered.prompt.endswith("watercolor painting, soft washes, paper texture")
    assert "flat vector" not in rendered.prompt
    assert rendered.negative_prompt == (
        "text, letters, numbers, busy composition, photo, hard edges, lowres"
    )
    assert rendered.size == "1024x576"


def test_template_default_style_applies(catalog):
    rendered = render(
        catalog,
        template="report-section-illustration",
        variables={"section_title": "Q3", "topic": "logistics"},
    )
    assert rendered.prompt.endswith("flat vector illustration, minimal, limited palette")


def test_negatives_merge_request_template_style_in_order(catalog):
    rendered = render(
        catalog,
        template="product-scene-shot",
        variables={"product_name": "a mug", "scene": "a kitchen"},
        negative_prompt="people",
    )
    assert rendered.negative_prompt == (
        "people, text, watermark, distorted product, cartoon, painting, illustration, lowres, "
        "blurry"
    )


def test_brand_appends_description_and_palette(catalog):
    rendered = render(catalog, prompt="a mug", brand="acme-retail")
    assert rendered.prompt == (
        "a mug, clean minimal Scandinavian look, friendly and trustworthy, "
        "color palette #0A2540, #F5F3EE, #E4572E"
    )


def test_brand_comes_after_style(catalog):
    rendered = render(catalog, prompt="a mug", style="anime", brand="northwind")
    assert rendered.prompt.index("anime style") < rendered.prompt.index("warm rustic")


@pytest.mark.parametrize(
    "prompt",
    ["the CHEAPEST mug", "Cheapest mug", "a mug, guaranteed!", "Best In The World mug"],
)
def test_brand_banned_terms_are_refused_case_insensitively(catalog, prompt):
    with raises_invalid("banned_term", "prompt"):
        render(catalog, prompt=prompt, brand="acme-retail")


@pytest.mark.parametrize("prompt", ["a carefree afternoon", "freedom", "discounted-looking"])
def test_banned_term_inside_another_word_is_allowed(catalog, prompt):
    rendered = render(catalog, prompt=prompt, brand="northwind")
    assert rendered.prompt.startswith(prompt)


def test_banned_term_in_template_variable_is_refused(catalog):
    with raises_invalid("banned_term"):
        render(
            catalog,
            template="product-detail-shot",
            variables={"product_name": "a FREE wallet", "feature": "edge"},
            brand="northwind",
        )


def test_banned_terms_only_apply_with_that_brand(catalog):
    assert render(catalog, prompt="a free mug").prompt == "a free mug"
    assert render(catalog, prompt="a free mug", brand="acme-retail").prompt.startswith("a free")


def test_listing_hides_prompt_texts(catalog):
    listing = catalog_listing(catalog)
    assert {t["name"] for t in listing["templates"]} == {t.name for t in catalog.templates}
    for template in listing["templates"]:
        assert "prompt" not in template
        assert "negative_prompt" not in template
        assert "title" in template and "variables" in template
    for style in listing["styles"]:
        assert "prompt_suffix" not in style
        assert "negative_prompt" not in style
    text = repr(listing)
    assert "soft studio lighting" not in text
    assert "85mm lens" not in text
    assert listing["brands"][0]["palette"]
