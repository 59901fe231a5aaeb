"""The family table is the one place a family's facts live: every row has its code, the
code reads its traits from the row, and config and /v1/models follow the table."""

from __future__ import annotations

import pytest

from serve_app.config import ModelConfig
from serve_app.families import FAMILIES, Task
from serve_app.models.base import TextToImageFamily
from serve_app.models.edit_base import ImageEditFamily
from serve_app.models.loading import family_for
from serve_app.models.vision_chat import VisionChatFamily
from serve_app.service.catalog import model_card

BASE_FOR_TASK = {
    Task.TEXT_TO_IMAGE: TextToImageFamily,
    Task.IMAGE_EDIT: ImageEditFamily,
    Task.VISION_CHAT: VisionChatFamily,
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_row_names_code_that_reads_its_traits(name):
    family = family_for(name)
    traits = FAMILIES[name]
    assert family.name == name and family.traits is traits
    assert isinstance(family, BASE_FOR_TASK[traits.task])
    if traits.task is Task.IMAGE_EDIT:
        assert traits.max_input_images >= 1 and traits.supports_mask
    elif traits.task is Task.VISION_CHAT:
        assert traits.max_input_images >= 1 and not traits.supports_mask
    else:
        assert traits.max_input_images == 0 and not traits.supports_mask


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_config_and_model_cards_follow_the_table(name):
    traits = FAMILIES[name]
    model = ModelConfig(name="m", family=name, path=f"tiny:{name}")
    assert model.task is traits.task and model.traits is traits
    card = model_card(model)
    capabilities = card.capabilities
    assert card.task == traits.task
    if traits.task is Task.VISION_CHAT:
        # What this model's config lets a request carry, within what the family takes.
        assert capabilities.max_input_images == model.chat.limits.max_images
        assert capabilities.max_input_images <= traits.max_input_images
        assert card.chat is not None and card.chat.max_images == model.chat.limits.max_images
    else:
        assert capabilities.max_input_images == traits.max_input_images
        assert card.chat is None
    assert capabilities.supports_mask == traits.supports_mask
    assert capabilities.supports_negative_prompt == traits.supports_negative_prompt
    assert capabilities.size_multiple == traits.size_multiple
    # Previews come from the step callback: families without one (or, for the generic
    # ones, without known latents) stream final images only.
    without_previews = {"longcat-image-edit", "diffusers", "diffusers-image-to-image"}
    streams_previews = name not in without_previews and traits.task is not Task.VISION_CHAT
    assert capabilities.supports_partial_images == streams_previews
    assert capabilities.batching.mode == traits.batching
    assert capabilities.batching.max_batch_images == model.batching.max_batch_size
    assert capabilities.batching.max_batch_work == model.batching.work_budget()


def test_an_unknown_family_is_refused_with_the_known_ones():
    with pytest.raises(ValueError) as info:
        ModelConfig(name="m", family="imagen", path="x")
    assert all(name in str(info.value) for name in FAMILIES)
