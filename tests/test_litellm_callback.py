"""The LiteLLM gateway adapter, on real LiteLLM calls without network (``mock_response``).

These tests need the optional ``litellm`` extra; they fail (never skip) without it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from shadowlens.gateway.emitter import ShadowEmitter, replica_sampled
from shadowlens.gateway.events import Arm, Event, Status, Task, decode_event

from tests.test_emitter_kafka import drain

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download
try:
    import litellm
    import openai
    from shadowlens.gateway import litellm_callback as lc
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    litellm = None
    MISSING = f"{exc}: install the extra with `.venv/bin/pip install -e '.[dev,litellm]'`"
else:
    MISSING = ""

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

T = TypeVar("T")
PRIMARY, CANDIDATE = "gpt-4o", "hosted_vllm/meta-llama/Meta-Llama-3-70B-Instruct"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Sink:
    """Collects events the way a `ShadowEmitter` would take them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.threads: list[bool] = []  # True: came through emit_threadsafe

    async def emit(self, event: Event) -> None:
        decode_event(event.to_json())  # what ShadowEmitter(validate=True) checks
        self.events.append(event)
        self.threads.append(False)

    def emit_threadsafe(self, event: Event) -> None:
        decode_event(event.to_json())
        self.events.append(event)
        self.threads.append(True)

    def by_arm(self) -> dict[Arm, Event]:
        return {e.arm: e for e in self.events}


@pytest.fixture
def sink() -> Iterator[Sink]:
    if MISSING:
        pytest.fail(MISSING, pytrace=False)
    sink = Sink()
    yield sink
    for cb in [c for c in litellm.callbacks if isinstance(c, lc.ShadowLensCallback)]:
        lc.uninstall(cb)


def run(coro_fn: Callable[[], Awaitable[T]], timeout_s: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout_s)

    return asyncio.run(bounded())


async def events_settle(sink: Sink, n: int, timeout_s: float = 10) -> None:
    """Wait for n events (LiteLLM logs in background tasks), then a little for extra ones."""
    deadline = time.monotonic() + timeout_s
    while len(sink.events) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert len(sink.events) == n, sink.events


def shadow(emitter: Any, **kwargs: Any) -> Awaitable[Any]:
    """`shadow_completion` of PRIMARY and CANDIDATE on MESSAGES."""
    kwargs = {"experiment": "exp", "segment": "geo", **kwargs}
    return lc.shadow_completion(PRIMARY, CANDIDATE, MESSAGES, emitter=emitter, **kwargs)


def assert_valid(event: Event) -> None:
    assert decode_event(event.to_json()) == event


def test_primary_and_candidate_events_share_the_request_id(sink: Sink) -> None:
    async def scenario() -> Any:
        response = await shadow(
            experiment="gpt4o-to-llama3",
            segment="geo",
            emitter=sink,
            mock_response="Paris.",
            candidate_kwargs={"mock_response": "The capital of France is Paris."},
        )
        await events_settle(sink, 2)
        return response

    response = run(scenario)
    assert response.choices[0].message.content == "Paris."  # the caller gets the primary
    arms = sink.by_arm()
    primary, candidate = arms[Arm.PRIMARY], arms[Arm.CANDIDATE]
    assert primary.request_id == candidate.request_id and len(primary.request_id) == 32
    for e in (primary, candidate):
        assert_valid(e)
        assert (e.experiment, e.segment, e.mode) == ("gpt4o-to-llama3", "geo", "shadow")
        assert e.task == Task.GENERATION
        assert e.status == Status.OK and e.error_type is None
        assert e.finish_reason == "stop"
        assert e.ttft_ms is None  # not streamed
        assert 0 <= e.latency_ms < 10_000
        assert e.end_time_ms is not None and e.end_time_ms >= e.start_time_ms
        assert e.input_tokens is not None and e.output_tokens is not None
        assert e.attributes["litellm.call_id"]
    assert primary.start_time_ms == candidate.start_time_ms  # the request's time, both halves
    assert (primary.model, primary.provider) == (PRIMARY, "openai")
    assert (candidate.model, candidate.provider) == (CANDIDATE, "hosted_vllm")
    assert primary.output.text == "Paris."
    assert candidate.output.text == "The capital of France is Paris."
    prices = litellm.model_cost[PRIMARY]
    expected = (
        primary.input_tokens * prices["input_cost_per_token"]
        + primary.output_tokens * prices["output_cost_per_token"]
    )
    assert primary.cost_usd == pytest.approx(expected)
    assert candidate.cost_usd is None  # LiteLLM has no price: the policy's price table will


def test_a_replica_share_sends_the_primary_a_second_time_as_the_replica_arm(sink: Sink) -> None:
    """Quality's reference for free text: the primary's agreement with itself. The share is
    picked by request id, so every gateway picks the same requests."""

    async def scenario() -> None:
        for i in range(12):
            await shadow(emitter=sink, request_id=f"r{i}", replica_share=0.5,
                         mock_response="Paris.")  # fmt: skip
        await events_settle(sink, 24 + sum(replica_sampled(f"r{i}", 0.5) for i in range(12)))

    run(scenario)
    replicas = [e for e in sink.events if e.arm == Arm.REPLICA]
    assert {e.request_id for e in replicas} == {
        f"r{i}" for i in range(12) if replica_sampled(f"r{i}", 0.5)
    }
    assert 0 < len(replicas) < 12
    assert all(e.model == PRIMARY and e.output.text == "Paris." for e in replicas)
    emitter = ShadowEmitter("127.0.0.1:1", replica_share=0.5)  # the emitter's share, by id
    assert [emitter.wants_replica(f"r{i}") for i in range(12)] == [
        replica_sampled(f"r{i}", 0.5) for i in range(12)
    ]
    assert not any(replica_sampled(f"r{i}", 0.0) for i in range(100))
    assert all(replica_sampled(f"r{i}", 1.0) for i in range(100))


def test_the_prompt_goes_on_the_primarys_event_only_when_asked(sink: Sink) -> None:
    """A live preference judge needs the user's request; it leaves the gateway only with
    `send_prompt`, once (on the primary's event), and the service's pair carries it."""
    from shadowlens.comparators.pairs import score_pair

    async def scenario(send_prompt: bool) -> None:
        sink.events.clear()
        await shadow(
            emitter=sink, mock_response="Paris.", replica_share=1.0, send_prompt=send_prompt
        )
        await events_settle(sink, 3)

    run(lambda: scenario(True))
    arms = sink.by_arm()
    assert arms[Arm.PRIMARY].attributes["prompt"] == MESSAGES[-1]["content"]
    assert "prompt" not in arms[Arm.CANDIDATE].attributes
    assert "prompt" not in arms[Arm.REPLICA].attributes
    pair = score_pair(decode_event(arms[Arm.PRIMARY].to_json()), arms[Arm.CANDIDATE], {})
    assert pair.prompt == MESSAGES[-1]["content"]
    run(lambda: scenario(False))
    assert all("prompt" not in e.attributes for e in sink.events)


def test_prompt_text_is_the_last_user_message_cut_to_size() -> None:
    if MISSING:
        pytest.fail(MISSING, pytrace=False)
    parts = [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [*parts, {"type": "text", "text": "this picture"}]},
    ]
    assert lc.prompt_text(messages) == "Describe\nthis picture"
    assert lc.prompt_text([{"role": "user", "content": "x" * 40_000}]) == "x" * lc.PROMPT_CHARS
    assert lc.prompt_text([{"role": "system", "content": "s"}]) == ""
    assert lc.prompt_text(None) == ""


def test_streaming_calls_carry_time_to_first_token(sink: Sink) -> None:
    async def scenario() -> str:
        stream = await shadow(
            emitter=sink,
            stream=True,
            mock_response="Paris is the capital of France.",
            candidate_kwargs={"mock_response": "Paris."},
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
        await events_settle(sink, 2)  # the candidate's stream is read in the background
        return "".join(parts)

    assert run(scenario) == "Paris is the capital of France."
    arms = sink.by_arm()
    assert arms[Arm.PRIMARY].output.text == "Paris is the capital of France."
    assert arms[Arm.CANDIDATE].output.text == "Paris."
    for e in arms.values():
        assert_valid(e)
        assert e.ttft_ms is not None and 0 <= e.ttft_ms <= e.latency_ms
        assert e.finish_reason == "stop"


def test_candidate_errors_and_timeouts_become_events_not_caller_errors(sink: Sink) -> None:
    async def scenario() -> None:
        for i, fault in enumerate(
            [
                {"mock_response": RuntimeError("vLLM out of memory")},
                {"mock_timeout": True, "timeout": 0.05},
            ]
        ):
            response = await shadow(
                emitter=sink,
                request_id=f"req-{i}",
                mock_response="Paris.",
                candidate_kwargs=fault,
            )
            assert response.choices[0].message.content == "Paris."
        await events_settle(sink, 4)  # LiteLLM logs a timeout twice: emitted once

    run(scenario)
    by_key = {(e.request_id, e.arm): e for e in sink.events}
    assert len(by_key) == 4
    error, timeout = by_key["req-0", Arm.CANDIDATE], by_key["req-1", Arm.CANDIDATE]
    for e in (error, timeout):
        assert_valid(e)
        assert e.output.text is None and e.cost_usd is None and e.input_tokens is None
    assert error.status == Status.ERROR
    assert error.error_type and error.error_type != "Timeout"
    assert (timeout.status, timeout.error_type) == (Status.TIMEOUT, "Timeout")
    assert timeout.latency_ms >= 40  # it failed after its 50 ms timeout
    assert all(by_key[f"req-{i}", Arm.PRIMARY].status == Status.OK for i in (0, 1))


def test_a_primary_failure_reaches_the_caller_and_is_emitted(sink: Sink) -> None:
    async def scenario() -> BaseException:
        with pytest.raises(openai.APIError) as raised:
            await shadow(
                emitter=sink,
                request_id="req-x",
                mock_response=ValueError("rate limited"),
                candidate_kwargs={"mock_response": "Paris."},
            )
        await events_settle(sink, 2)
        return raised.value

    exc = run(scenario)
    arms = sink.by_arm()
    assert arms[Arm.PRIMARY].status == Status.ERROR
    assert arms[Arm.PRIMARY].error_type == type(exc).__name__
    assert arms[Arm.CANDIDATE].status == Status.OK
    assert {e.request_id for e in sink.events} == {"req-x"}


def test_task_decides_where_the_answer_goes(sink: Sink) -> None:
    async def scenario() -> None:
        await shadow(
            experiment="exp",
            segment="invoices",
            emitter=sink,
            task=Task.EXTRACTION,
            mock_response='{"total": 42, "currency": "EUR"}',
            candidate_kwargs={"mock_response": "total: 42 EUR"},
        )
        await events_settle(sink, 2)

    run(scenario)
    arms = sink.by_arm()
    assert arms[Arm.PRIMARY].output.json == {"total": 42, "currency": "EUR"}
    assert arms[Arm.CANDIDATE].output.json is None  # not JSON: the comparator sees that
    assert arms[Arm.CANDIDATE].output.text == "total: 42 EUR"
    assert all(e.task == Task.EXTRACTION for e in sink.events)
    with pytest.raises(ValueError):
        run(
            lambda: shadow(
                experiment="e",
                segment="s",
                emitter=sink,
                task=Task.EMBEDDING,
            )
        )


def test_synchronous_calls_tagged_by_hand_are_emitted_once(sink: Sink) -> None:
    async def scenario() -> None:
        callback = lc.install(sink)
        assert lc.install(sink) is callback  # one callback per emitter

        def tagged(arm: Arm, model: str) -> dict[str, Any]:
            tag = lc.shadow_metadata(
                callback, request_id="sync-1", arm=arm, experiment="exp", segment="geo", model=model
            )
            return {"metadata": {lc.METADATA_KEY: tag, "team": "search"}}

        def calls() -> None:  # a synchronous gateway, in its own thread
            litellm.completion(
                model=PRIMARY,
                messages=MESSAGES,
                mock_response="Paris.",
                **tagged(Arm.PRIMARY, PRIMARY),
            )
            with pytest.raises(openai.APIError):
                litellm.completion(
                    model=CANDIDATE,
                    messages=MESSAGES,
                    mock_response=RuntimeError("down"),
                    **tagged(Arm.CANDIDATE, CANDIDATE),
                )
            litellm.completion(model=PRIMARY, messages=MESSAGES, mock_response="untagged")
            other = lc.ShadowLensCallback(Sink())  # tagged for a callback that is not there
            meta = lc.shadow_metadata(
                other, request_id="x", arm=Arm.PRIMARY, experiment="e", segment="s", model=PRIMARY
            )
            litellm.completion(
                model=PRIMARY,
                messages=MESSAGES,
                mock_response="other",
                metadata={lc.METADATA_KEY: meta},
            )

        await asyncio.to_thread(calls)
        await events_settle(sink, 2)

    run(scenario)
    arms = sink.by_arm()
    assert all(sink.threads)  # the synchronous hooks, not the async ones
    assert {e.request_id for e in sink.events} == {"sync-1"}
    assert arms[Arm.PRIMARY].status == Status.OK and arms[Arm.PRIMARY].output.text == "Paris."
    assert arms[Arm.CANDIDATE].status == Status.ERROR
    for e in sink.events:
        assert_valid(e)


@pytest.mark.kafka
def test_through_a_real_emitter_both_halves_land_keyed_by_request_id(
    sink: Sink, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=4)

    async def scenario() -> list[Any]:
        async with ShadowEmitter(kafka_bootstrap, topic) as emitter:
            for i in range(20):
                await shadow(
                    emitter=emitter,
                    request_id=f"req-{i}",
                    mock_response=f"answer {i}",
                    candidate_kwargs={"mock_response": f"candidate {i}"},
                )
            while emitter.stats.emitted < 40:
                await asyncio.sleep(0.01)
        return await drain(kafka_bootstrap, topic)

    records = run(scenario)
    assert len(records) == 40
    halves: dict[bytes, set[str]] = {}
    for r in records:
        e = decode_event(r.value)
        assert r.key == e.request_id.encode()
        halves.setdefault(r.key, set()).add(str(e.arm))
    assert halves == {f"req-{i}".encode(): {"primary", "candidate"} for i in range(20)}
