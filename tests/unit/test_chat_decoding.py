"""Vision-chat decoding without Ray: text released step by step, the thinking block apart,
stop strings, grammars that always close, batches equal to solo runs, and a caller that
goes away stopping its rows. The tiny models' answers are noise; what they must equal or
parse is checked."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from serve_app.config import ModelConfig
from serve_app.errors import InvalidRequestError
from serve_app.models.chat_engine import ChatEngine, ChatTask
from serve_app.models.chat_replica import ChatReplica
from serve_app.models.chat_spec import ChatDeltas, ChatResult, ChatSpec, FinishReason
from serve_app.models.grammar import ANY_OBJECT, json_grammar
from serve_app.models.text_stream import ReasoningSplitter, StopStrings


def test_reasoning_is_split_from_the_answer_however_the_text_arrives():
    text = '<think>the label says 99</think><|begin_of_box|>{"price": true}<|end_of_box|>'
    for size in (1, 3, 7, len(text)):
        splitter = ReasoningSplitter(
            ("<think>", "</think>"), ("<|begin_of_box|>", "<|end_of_box|>")
        )
        reasoning, answer = "", ""
        for start in range(0, len(text), size):
            r, a = splitter.feed(text[start : start + size])
            reasoning, answer = reasoning + r, answer + a
        r, a = splitter.flush()
        assert (reasoning + r, answer + a) == ("the label says 99", '{"price": true}')


def test_stop_strings_cut_the_text_and_never_show_a_part_of_one():
    stops = StopStrings(["END", "##"])
    released = "".join(stops.feed(piece) for piece in ["abc E", "N", "xyz #", "#tail"])
    assert released == "abc ENxyz " and stops.stopped
    assert StopStrings([]).feed("free") == "free"


@pytest.fixture(scope="module", params=["glm-4.6v", "qwen2.5-vl"])
def engine(request, tmp_path_factory) -> ChatEngine:
    family = request.param
    config = ModelConfig(
        name=f"{family}-tiny",
        family=family,
        path=f"tiny:{family}",
        dtype="float32",
        device="cpu",
        batching={"max_batch_size": 8},
    )
    return ChatEngine(config, tmp_path_factory.mktemp("tiny"), cpu_threads=1)


def picture(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def spec(text: str, images: int = 1, seed: int = 0, **options) -> ChatSpec:
    content = [{"type": "image"}] * images + [{"type": "text", "text": text}]
    messages = (
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": content},
    )
    pixels = tuple(picture(60 + 30 * i, 90, seed + i) for i in range(images))
    values = {"max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seeds": (seed,)} | options
    return ChatSpec(messages, pixels, **values)


def answers(result) -> list[str]:
    assert isinstance(result, ChatResult), result
    return [choice.text for choice in result.choices]


def test_a_batched_request_answers_what_it_answers_alone(engine):
    specs = [
        spec("what is this?", seed=1),
        spec("a longer question about both pictures", images=2, seed=2, max_tokens=6),
        spec("no picture", images=0, temperature=0.9, top_p=0.8, seeds=(5, 6)),
    ]
    alone = [engine.run_batch([ChatTask(s)])[0] for s in specs]
    together = engine.run_batch([ChatTask(s) for s in specs])
    assert [answers(a) for a in alone] == [answers(t) for t in together]
    assert all(t.batch_rows == 4 for t in together)
    assert [a.prompt_tokens for a in alone] == [t.prompt_tokens for t in together]
    assert together[1].choices[0].completion_tokens <= 6


def test_grammars_always_close_and_validate(engine):
    schema = {
        "type": "object",
        "properties": {
            "price": {"type": "boolean"},
            "words": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["price", "words"],
        "additionalProperties": False,
    }
    for grammar, check in (
        (json_grammar(ANY_OBJECT, "x"), lambda value: isinstance(value, dict)),
        (json_grammar(schema, "x"), lambda value: set(value) == {"price", "words"}),
    ):
        for seed in range(3):
            task = ChatTask(
                spec("json", seed=seed, temperature=1.0, grammar=grammar, max_tokens=60)
            )
            result = engine.run_batch([task])[0]
            assert check(json.loads(answers(result)[0]))


def test_a_budget_too_small_for_the_grammar_is_refused_alone(engine):
    grammar = json_grammar(
        {
            "type": "object",
            "properties": {"a_long_key": {"type": "string"}},
            "required": ["a_long_key"],
        },
        "x",
    )
    refused, fine = engine.run_batch(
        [ChatTask(spec("x", grammar=grammar, max_tokens=3)), ChatTask(spec("y"))]
    )
    assert isinstance(refused, InvalidRequestError) and refused.param == "max_tokens"
    assert isinstance(fine, ChatResult)


def test_control_tokens_in_text_are_refused(engine):
    token = "<|image|>" if engine.config.family == "glm-4.6v" else "<|image_pad|>"
    result = engine.run_batch([ChatTask(spec(f"look {token}"))])[0]
    assert isinstance(result, InvalidRequestError) and result.code == "invalid_messages"


def test_stream_deltas_add_up_to_the_answer(engine):
    async def collect():
        replica = ChatReplica(engine)
        pieces, final = [], None
        async for item in replica.stream(spec("stream it", max_tokens=10)):
            if isinstance(item, ChatDeltas):
                pieces.extend(delta.content for delta in item.deltas)
            else:
                final = item
        return "".join(pieces), final

    text, final = asyncio.run(collect())
    assert final is not None and text == final.choices[0].text


def test_a_cancelled_request_stops_its_rows(engine):
    task = ChatTask(spec("go on", max_tokens=200, temperature=1.0, seeds=(1,)))
    steps = []
    original = task.cancelled

    class CancelAfterThree(threading.Event):
        def is_set(self):
            steps.append(1)
            return len(steps) > 3

    task.cancelled = CancelAfterThree()
    result = engine.run_batch([task])[0]
    assert result.choices[0].finish_reason is FinishReason.CANCELLED
    assert result.choices[0].completion_tokens <= 3
    assert not original.is_set()


def test_deltas_of_several_steps_make_one_chunk_per_choice(engine):
    from serve_app.models.chat_spec import ChatDelta
    from serve_app.service.chat import ChatCall, ChunkWriter

    two = spec("two choices", seeds=(1, 2))
    writer = ChunkWriter(ChatCall(engine.config, two, 1), include_usage=False)
    steps = ChatDeltas(
        [
            ChatDelta(0, reasoning="hm"),
            ChatDelta(1, content="A"),
            ChatDelta(0, reasoning=",", content="B"),
            ChatDelta(1, content="C"),
            ChatDelta(0, content="D"),
        ]
    )
    chunk = writer.deltas(steps)
    assert [(c.index, c.delta.content, c.delta.reasoning_content) for c in chunk.choices] == [
        (0, "BD", "hm,"),
        (1, "AC", None),
    ]
    assert writer.deltas(ChatDeltas([ChatDelta(0)])) is None
