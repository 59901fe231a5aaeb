"""Family name -> family class. Imports are lazy so the Gateway never loads torch."""

from __future__ import annotations

import importlib

FAMILY_CLASSES = {
    "stable-diffusion": "serve_app.models.stable_diffusion:StableDiffusionFamily",
    "z-image": "serve_app.models.z_image:ZImageFamily",
    "glm-image": "serve_app.models.glm_image:GlmImageFamily",
}

# What the Gateway needs to validate a request, without importing the family.
SIZE_MULTIPLES = {"stable-diffusion": 8, "z-image": 16, "glm-image": 32}
NEGATIVE_PROMPT_SUPPORT = {"stable-diffusion": True, "z-image": True, "glm-image": False}


def family_for(name: str):
    module_name, class_name = FAMILY_CLASSES[name].split(":")
    family = getattr(importlib.import_module(module_name), class_name)()
    # The Gateway's copies must agree with the families themselves.
    assert family.size_multiple == SIZE_MULTIPLES[name]
    assert family.supports_negative_prompt == NEGATIVE_PROMPT_SUPPORT[name]
    return family
