"""The Gateway's overload line (serve_app/service/overload_line.py) against a fake model
that admits `capacity` calls and refuses the rest, as Serve's full queue does. The calls
finish when the test says so, so nothing here depends on the machine's speed."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.config import GatewayConfig
from serve_app.errors import ErrorCode, InvalidRequestError, ServiceUnavailableError
from serve_app.service.overload_line import OverloadLine

# Long enough that no test reaches it unless it means to.
PATIENT_S = 60


class FakeModel:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.running: dict[str, asyncio.Event] = {}
        self.admitted: list[str] = []
        self.refusals = 0

    def start(self, name: str):
        """The line's `send` for request `name`: returns once admitted, with its answer."""

        async def send():
            if len(self.running) >= self.capacity:
                self.refusals += 1
                raise ServiceUnavailableError("full", code=ErrorCode.MODEL_OVERLOADED)
            done = self.running[name] = asyncio.Event()
            self.admitted.append(name)
            return self._answer(name, done)

        return send

    async def _answer(self, name: str, done: asyncio.Event) -> str:
        try:
            await done.wait()
        finally:
            del self.running[name]
        return name

    def finish(self, name: str) -> None:
        self.running[name].set()


def fast_line(wait_s: float = PATIENT_S) -> OverloadLine:
    return OverloadLine(wait_s, retry_s=0.005)


def one_head() -> OverloadLine:
    """One sender that asks again only when a call of the line ends: the order is exact."""
    return OverloadLine(PATIENT_S, senders=1, retry_s=PATIENT_S)


async def until(condition, what: str) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


def test_refused_requests_are_admitted_in_the_order_they_came():
    async def scenario() -> list[str]:
        model, line = FakeModel(capacity=1), one_head()
        tasks = {}
        for name in "ABCD":
            tasks[name] = asyncio.create_task(line.send(model.start(name)))
            await until(lambda n=name: n in model.admitted or line.waiting, f"{name} sent")
            await asyncio.sleep(0.02)
        assert model.admitted == ["A"] and line.waiting == 3
        for name in "ABCD":
            await until(lambda n=name: n in model.running, f"{name} admitted")
            model.finish(name)
            assert await tasks[name] == name
        assert line.waiting == 0
        return model.admitted

    assert asyncio.run(scenario()) == ["A", "B", "C", "D"]


def test_a_newcomer_queues_behind_those_waiting_instead_of_taking_the_freed_slot():
    async def scenario() -> list[str]:
        model, line = FakeModel(capacity=1), one_head()
        first = asyncio.create_task(line.send(model.start("A")))
        await until(lambda: "A" in model.running, "A admitted")
        waiter = asyncio.create_task(line.send(model.start("B")))
        await until(lambda: line.waiting == 1, "B in line")
        # The slot frees and a newcomer arrives in the same instant.
        model.finish("A")
        newcomer = asyncio.create_task(line.send(model.start("E")))
        await until(lambda: "B" in model.running, "B admitted")
        assert "E" not in model.admitted
        model.finish("B")
        await until(lambda: "E" in model.running, "E admitted")
        model.finish("E")
        assert [await t for t in (first, waiter, newcomer)] == ["A", "B", "E"]
        return model.admitted

    assert asyncio.run(scenario()) == ["A", "B", "E"]


def test_several_heads_send_at_once_and_the_rest_wait_their_turn():
    async def scenario() -> None:
        model = FakeModel(capacity=1)
        line = OverloadLine(PATIENT_S, senders=2, retry_s=PATIENT_S)
        tasks = [asyncio.create_task(line.send(model.start(name))) for name in "ABCDE"]
        await until(lambda: line.waiting == 4, "four in line")
        await asyncio.sleep(0.05)
        # B refused at the door, then B and C asked as heads; D and E did not ask.
        assert model.refusals == 3 and model.admitted == ["A"]
        for name in "ABCDE":
            await until(lambda n=name: n in model.running, f"{name} admitted")
            model.finish(name)
        assert sorted([await t for t in tasks]) == list("ABCDE")

    asyncio.run(scenario())


def test_past_the_wait_the_refusal_stands_and_the_line_is_left():
    async def scenario() -> None:
        model, line = FakeModel(capacity=1), fast_line(wait_s=0.2)
        running = asyncio.create_task(line.send(model.start("A")))
        await until(lambda: "A" in model.running, "A admitted")
        with pytest.raises(ServiceUnavailableError) as refused:
            await asyncio.wait_for(line.send(model.start("B")), PATIENT_S)
        assert refused.value.code == ErrorCode.MODEL_OVERLOADED
        assert "stayed so for 0.2 s" in refused.value.message
        assert line.waiting == 0 and model.admitted == ["A"]
        assert model.refusals > 1  # it was asked again while B waited
        model.finish("A")
        assert await running == "A"

    asyncio.run(scenario())


def test_a_caller_that_goes_away_leaves_the_line_and_its_request_never_runs():
    async def scenario() -> None:
        model, line = FakeModel(capacity=1), fast_line()
        asyncio.create_task(line.send(model.start("A")))
        await until(lambda: "A" in model.running, "A admitted")
        gone = asyncio.create_task(line.send(model.start("B")))
        await until(lambda: line.waiting == 1, "B in line")
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert line.waiting == 0
        later = asyncio.create_task(line.send(model.start("C")))
        model.finish("A")
        await until(lambda: "C" in model.running, "C admitted")
        model.finish("C")
        assert await later == "C"
        assert "B" not in model.admitted

    asyncio.run(scenario())


def test_with_no_wait_a_refusal_is_answered_at_once():
    async def scenario() -> None:
        model, line = FakeModel(capacity=1), OverloadLine(0)
        asyncio.create_task(line.send(model.start("A")))
        await until(lambda: "A" in model.running, "A admitted")
        with pytest.raises(ServiceUnavailableError):
            await line.send(model.start("B"))
        assert model.refusals == 1 and line.waiting == 0
        model.finish("A")

    asyncio.run(scenario())


def test_other_errors_are_not_sent_again():
    calls = []

    async def bad_request():
        calls.append(1)
        raise InvalidRequestError("size: no", param="size")

    with pytest.raises(InvalidRequestError):
        asyncio.run(fast_line().send(bad_request))
    assert calls == [1]


def test_a_refusal_with_the_answer_sends_the_request_back_into_the_line():
    """A request taken and then refused (the model's queue filled meanwhile) is sent
    again, not answered 503."""
    tries = []

    async def answer(attempt: int) -> str:
        if attempt < 3:
            raise ServiceUnavailableError("full", code=ErrorCode.MODEL_OVERLOADED)
        return "ran"

    async def send():
        tries.append(1)
        return answer(len(tries))

    assert asyncio.run(fast_line().send(send)) == "ran"
    assert len(tries) == 3


def test_the_line_must_end_before_the_model_timeout():
    with pytest.raises(ValueError, match="overload_wait_s=600 must be below model_timeout_s=600"):
        GatewayConfig(overload_wait_s=600, model_timeout_s=600)
    assert GatewayConfig(overload_wait_s=60).overload_wait_s == 60
    with pytest.raises(ValueError, match="wait_s=-1"):
        OverloadLine(-1)
