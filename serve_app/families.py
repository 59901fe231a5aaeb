"""The one table of model families: what each family does and how it is served.

Torch-free, so the config, the image service and `/v1/models` read it without loading a
pipeline; the family classes in `serve_app/models/` take their traits from it as well.
Adding a family means a row here and the family's own file in `serve_app/models/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Task(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_EDIT = "image-edit"
    # Answers questions about images (chat completions).
    VISION_CHAT = "vision-chat"


class Batching(StrEnum):
    """How a model replica groups requests into pipeline (or `generate`) calls."""

    # Requests with equal batch keys share one call; each image equals its solo run.
    SHARED = "shared"
    # One request per call (its n images still come from that one call).
    PER_REQUEST = "per_request"


@dataclass(frozen=True)
class FamilyTraits:
    name: str
    task: Task
    # "module:Class" of the family's code, imported only where the model loads.
    implementation: str
    # Width and height must be multiples of this (VAE factor times patch size).
    size_multiple: int
    batching: Batching = Batching.SHARED
    # A model's config may declare shared calls safe (`batching.shared_calls: true`): for
    # the generic families, whose pipeline is whatever the checkpoint names.
    batching_declarable: bool = False
    # Images one edit request may give (several where the model composes references).
    max_input_images: int = 0
    # A mask limits where an edit may change pixels.
    supports_mask: bool = False
    supports_negative_prompt: bool = True
    # Per-request LoRA adapters: the pipeline has diffusers' LoRA loader
    # (load_lora_weights / set_adapters / delete_adapters).
    supports_adapters: bool = False
    # The pipeline reports each denoising step (a job's progress moves per step).
    reports_steps: bool = True
    # Vision chat: the model may think aloud first, between these markers; the answer
    # returns that part apart, as `reasoning_content`.
    reasoning_markers: tuple[str, str] | None = None


FAMILIES: dict[str, FamilyTraits] = {
    traits.name: traits
    for traits in (
        FamilyTraits(
            "stable-diffusion",
            Task.TEXT_TO_IMAGE,
            "serve_app.models.stable_diffusion:StableDiffusionFamily",
            size_multiple=8,
            supports_adapters=True,
        ),
        FamilyTraits(
            "z-image",
            Task.TEXT_TO_IMAGE,
            "serve_app.models.z_image:ZImageFamily",
            # VAE factor 8 times the transformer's 2x2 patches.
            size_multiple=16,
            supports_adapters=True,
        ),
        FamilyTraits(
            "glm-image",
            Task.TEXT_TO_IMAGE,
            "serve_app.models.glm_image:GlmImageFamily",
            # The AR model writes one token per 32x32 pixels.
            size_multiple=32,
            # The AR stage samples every row of a batch from one RNG stream seeded by the
            # first generator, so a batched image would depend on its neighbours.
            batching=Batching.PER_REQUEST,
            # Guidance contrasts against an empty glyph prompt; there is no negative prompt.
            supports_negative_prompt=False,
        ),
        FamilyTraits(
            "qwen-image",
            Task.TEXT_TO_IMAGE,
            "serve_app.models.qwen_image:QwenImageFamily",
            # VAE factor 8 times the transformer's 2x2 patches.
            size_multiple=16,
            supports_adapters=True,
        ),
        FamilyTraits(
            "flux",
            Task.TEXT_TO_IMAGE,
            "serve_app.models.flux:FluxFamily",
            # VAE factor 8 times the transformer's 2x2 packing.
            size_multiple=16,
            # Guidance-distilled (dev) or guidance-free (schnell): no CFG to negate.
            supports_negative_prompt=False,
            supports_adapters=True,
        ),
        FamilyTraits(
            "instruct-pix2pix",
            Task.IMAGE_EDIT,
            "serve_app.models.instruct_pix2pix:InstructPix2PixFamily",
            size_multiple=8,
            max_input_images=1,
            supports_mask=True,
            supports_adapters=True,
        ),
        FamilyTraits(
            "qwen-image-edit",
            Task.IMAGE_EDIT,
            "serve_app.models.qwen_image_edit:QwenImageEditFamily",
            size_multiple=16,
            max_input_images=1,
            supports_mask=True,
            supports_adapters=True,
        ),
        FamilyTraits(
            "qwen-image-edit-plus",
            Task.IMAGE_EDIT,
            "serve_app.models.qwen_image_edit:QwenImageEditPlusFamily",
            size_multiple=16,
            # One prompt per pipeline call.
            batching=Batching.PER_REQUEST,
            max_input_images=3,
            supports_mask=True,
            supports_adapters=True,
        ),
        FamilyTraits(
            "flux-kontext",
            Task.IMAGE_EDIT,
            "serve_app.models.flux:FluxKontextFamily",
            size_multiple=16,
            max_input_images=1,
            supports_mask=True,
            # Guidance-distilled like FLUX.1-dev: no CFG to negate.
            supports_negative_prompt=False,
            supports_adapters=True,
        ),
        FamilyTraits(
            "longcat-image-edit",
            Task.IMAGE_EDIT,
            "serve_app.models.longcat_image_edit:LongCatImageEditFamily",
            size_multiple=16,
            # One prompt and one image per pipeline call.
            batching=Batching.PER_REQUEST,
            max_input_images=1,
            supports_mask=True,
            # Its pipeline takes no step callback: a job's progress moves when it ends.
            reports_steps=False,
        ),
        # Any diffusers pipeline AutoPipeline loads, with no code of its own: its
        # requests run alone unless the model's config declares shared calls safe, it
        # takes what its pipeline's call accepts, and it reports no steps (its latents
        # may be packed in ways previews cannot know).
        FamilyTraits(
            "diffusers",
            Task.TEXT_TO_IMAGE,
            "serve_app.models.generic:GenericTextToImageFamily",
            size_multiple=16,
            batching=Batching.PER_REQUEST,
            batching_declarable=True,
            reports_steps=False,
        ),
        FamilyTraits(
            "diffusers-image-to-image",
            Task.IMAGE_EDIT,
            "serve_app.models.generic:GenericImageToImageFamily",
            size_multiple=16,
            batching=Batching.PER_REQUEST,
            batching_declarable=True,
            max_input_images=1,
            supports_mask=True,
            reports_steps=False,
        ),
        # Vision chat: one `generate` call holds every waiting conversation (left-padded,
        # each row its own sampling, seed, stop strings, token budget and grammar).
        FamilyTraits(
            "glm-4.6v",
            Task.VISION_CHAT,
            "serve_app.models.glm4v:Glm4vChatFamily",
            # 14-pixel patches merged 2x2 into one image token.
            size_multiple=28,
            max_input_images=8,
            supports_negative_prompt=False,
            reports_steps=False,
            reasoning_markers=("<think>", "</think>"),
        ),
        FamilyTraits(
            "qwen2.5-vl",
            Task.VISION_CHAT,
            "serve_app.models.qwen25_vl:Qwen25VLChatFamily",
            size_multiple=28,
            max_input_images=8,
            supports_negative_prompt=False,
            reports_steps=False,
        ),
    )
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
