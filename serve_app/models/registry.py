"""Family name -> family class. Imports are lazy so the Gateway never loads torch."""

from __future__ import annotations

import importlib

FAMILY_CLASSES = {
    "stable-diffusion": "serve_app.models.stable_diffusion:StableDiffusionFamily",
    "z-image": "serve_app.models.z_image:ZImageFamily",
    "glm-image": "serve_app.models.glm_image:GlmImageFamily",
    "instruct-pix2pix": "serve_app.models.instruct_pix2pix:InstructPix2PixFamily",
    "qwen-image-edit": "serve_app.models.qwen_image_edit:QwenImageEditFamily",
    "qwen-image-edit-plus": "serve_app.models.qwen_image_edit:QwenImageEditPlusFamily",
    "longcat-image-edit": "serve_app.models.longcat_image_edit:LongCatImageEditFamily",
}

# What the Gateway needs to validate a request, without importing the family.
FAMILY_TASKS = {
    "stable-diffusion": "text-to-image",
    "z-image": "text-to-image",
    "glm-image": "text-to-image",
    "instruct-pix2pix": "image-edit",
    "qwen-image-edit": "image-edit",
    "qwen-image-edit-plus": "image-edit",
    "longcat-image-edit": "image-edit",
}
SIZE_MULTIPLES = {
    "stable-diffusion": 8,
    "z-image": 16,
    "glm-image": 32,
    "instruct-pix2pix": 8,
    "qwen-image-edit": 16,
    "qwen-image-edit-plus": 16,
    "longcat-image-edit": 16,
}
NEGATIVE_PROMPT_SUPPORT = {
    "stable-diffusion": True,
    "z-image": True,
    "glm-image": False,
    "instruct-pix2pix": True,
    "qwen-image-edit": True,
    "qwen-image-edit-plus": True,
    "longcat-image-edit": True,
}
# How many input images one edit request may carry.
MAX_INPUT_IMAGES = {
    "instruct-pix2pix": 1,
    "qwen-image-edit": 1,
    "qwen-image-edit-plus": 3,
    "longcat-image-edit": 1,
}


def family_for(name: str):
    module_name, class_name = FAMILY_CLASSES[name].split(":")
    family = getattr(importlib.import_module(module_name), class_name)()
    # The Gateway's copies must agree with the families themselves.
    assert family.task == FAMILY_TASKS[name]
    assert family.size_multiple == SIZE_MULTIPLES[name]
    assert family.supports_negative_prompt == NEGATIVE_PROMPT_SUPPORT[name]
    if family.task == "image-edit":
        assert family.max_input_images == MAX_INPUT_IMAGES[name]
    return family
