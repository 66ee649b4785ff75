"""LiteLLM as a shadowlens gateway: shadow a candidate model and emit both halves of a request.

LiteLLM's own traffic mirroring and fallbacks give every call its own id, so the primary's
and the candidate's logs cannot be paired. `shadow_completion` calls the primary (its
answer goes back to the caller) and, in the background, the candidate with the same
messages; both calls carry the same request id in LiteLLM's ``metadata``. A
`ShadowLensCallback` (a LiteLLM ``CustomLogger``) turns each finished call into one
`Event` (latency, time to first token when streaming, token usage, LiteLLM's cost, output,
finish reason, or status ``error``/``timeout`` with the exception's class) and hands it to
a `ShadowEmitter`::

    async with ShadowEmitter("kafka:9092") as emitter:
        response = await shadow_completion(
            "gpt-4o", "hosted_vllm/meta-llama/Meta-Llama-3-70B-Instruct", messages,
            experiment="gpt4o-to-llama3-70b", segment="support", emitter=emitter,
            candidate_kwargs={"api_base": "http://vllm:8000/v1", "timeout": 30},
        )

With a replica share (``replica_share=`` or the emitter's), that share of requests is also
sent to the primary a second time, in the background, and emitted as the ``replica`` arm:
the primary's agreement with itself, which the judge certifies the candidate's quality
against.

Calls made elsewhere (a LiteLLM ``Router``, a synchronous ``litellm.completion``) are
emitted too when they carry `shadow_metadata(...)` and the callback is `install`ed.
Calls without it are ignored, so the callback can stay registered next to others.

LiteLLM is an optional dependency (``pip install 'shadowlens-gateway[litellm]'``); nothing
else in shadowlens imports this module. LiteLLM fetches its model price map from the internet on
import unless ``LITELLM_LOCAL_MODEL_COST_MAP=True``: set it on machines without egress.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import litellm
import orjson
from litellm.integrations.custom_logger import CustomLogger
from shadowlens.gateway.emitter import EventSink, ShadowEmitter, replica_sampled
from shadowlens.gateway.events import Arm, Event, Output, Status, Task

log = logging.getLogger(__name__)

METADATA_KEY = "shadowlens"
PROMPT_CHARS = 32_768  # a prompt sent for the judge is cut here (events stay small)
_SEEN_CALLS = 10_000  # call ids remembered to emit each call once (LiteLLM may log twice)
_background: set[asyncio.Task[Any]] = set()  # candidate calls in flight (strong refs)


class ShadowLensCallback(CustomLogger):
    """Turns LiteLLM calls tagged by `shadow_metadata` for this callback into events."""

    def __init__(self, emitter: EventSink) -> None:
        super().__init__()
        self.emitter = emitter
        self.id = uuid.uuid4().hex  # calls name the callback that emits them
        self.emitted = 0
        self.errors = 0
        self._seen: OrderedDict[str, None] = OrderedDict()

    # LiteLLM calls these by keyword: the parameter names are part of its API.
    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        if not _is_async(kwargs):  # async calls are logged by the async hook below
            self._emit_threadsafe(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        if not _is_async(kwargs):
            self._emit_threadsafe(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._emit(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._emit(kwargs, response_obj, start_time, end_time, failed=True)

    # ------------------------------------------------------------------ internals

    async def _emit(
        self, kwargs: dict[str, Any], response: Any, start: Any, end: Any, *, failed: bool
    ) -> None:
        event = self._take(kwargs, response, start, end, failed)
        if event is None:
            return
        try:  # LiteLLM runs this hook in a background task: waiting for room is fine here
            await self.emitter.emit(event)
            self.emitted += 1
        except Exception:
            self.errors += 1
            log.exception("shadowlens event for request %s not emitted", event.request_id)

    def _emit_threadsafe(
        self, kwargs: dict[str, Any], response: Any, start: Any, end: Any, *, failed: bool
    ) -> None:
        event = self._take(kwargs, response, start, end, failed)
        if event is None:
            return
        try:
            self.emitter.emit_threadsafe(event)
            self.emitted += 1
        except Exception:
            self.errors += 1
            log.exception("shadowlens event for request %s not emitted", event.request_id)

    def _take(
        self, kwargs: dict[str, Any], response: Any, start: Any, end: Any, failed: bool
    ) -> Event | None:
        """The event of a call tagged for this callback, once per call; else None."""
        tag = _tag(kwargs)
        if tag is None or tag.get("callback") != self.id:
            return None
        call_id = str(kwargs.get("litellm_call_id") or id(kwargs))
        if call_id in self._seen:
            return None
        self._seen[call_id] = None
        if len(self._seen) > _SEEN_CALLS:
            self._seen.popitem(last=False)
        try:
            return to_event(tag, kwargs, response, start, end, failed=failed)
        except Exception:  # a mapping bug must not break the caller's LiteLLM call
            self.errors += 1
            log.exception("could not build a shadowlens event from a LiteLLM call")
            return None


def shadow_metadata(
    callback: ShadowLensCallback,
    *,
    request_id: str,
    arm: Arm | str,
    experiment: str,
    segment: str,
    model: str,
    task: Task | str = Task.GENERATION,
    request_start_ms: int | None = None,
    provider: str | None = None,
    send_prompt: bool = False,
) -> dict[str, Any]:
    """What a call's ``metadata[METADATA_KEY]`` must hold for `callback` to emit it.
    With `send_prompt`, the primary's event carries the user's request (`prompt_text`)."""
    return {
        "callback": callback.id,
        "request_id": request_id,
        "arm": str(Arm(arm)),
        "experiment": experiment,
        "segment": segment,
        "model": model,
        "task": str(Task(task)),
        "request_start_ms": request_start_ms,
        "provider": provider,
        "send_prompt": send_prompt,
    }


def install(emitter: EventSink) -> ShadowLensCallback:
    """The callback registered in ``litellm.callbacks`` for `emitter` (registered once)."""
    for cb in litellm.callbacks:
        if isinstance(cb, ShadowLensCallback) and cb.emitter is emitter:
            return cb
    callback = ShadowLensCallback(emitter)
    litellm.callbacks.append(callback)
    return callback


def uninstall(callback: ShadowLensCallback) -> None:
    """Remove `callback` from LiteLLM (it copies ``litellm.callbacks`` into its own lists)."""
    manager = getattr(litellm, "logging_callback_manager", None)
    if manager is not None and hasattr(manager, "remove_callback_from_all_lists"):
        manager.remove_callback_from_all_lists(callback)
    while callback in litellm.callbacks:
        litellm.callbacks.remove(callback)


async def shadow_completion(
    primary_model: str,
    candidate_model: str,
    messages: list[dict[str, Any]],
    *,
    experiment: str,
    segment: str,
    emitter: EventSink,
    request_id: str | None = None,
    task: Task | str = Task.GENERATION,
    candidate_kwargs: Mapping[str, Any] | None = None,
    replica_share: float | None = None,
    send_prompt: bool = False,
    **kwargs: Any,
) -> Any:
    """The primary's ``litellm.acompletion`` response; the candidate runs in the background.

    Both calls get `kwargs` (``candidate_kwargs`` override them for the candidate: its
    ``api_base``, ``timeout``, ``mock_response``...) and one shared request id (a new
    UUID unless given). The candidate's answer and errors never reach the caller; a
    streamed candidate response is read to its end so that it is logged. A
    `replica_share` of requests (default: the emitter's, else none), picked by request id,
    also calls the primary a second time in the background, as the replica arm.
    `send_prompt` puts the user's request on the primary's event (attribute ``prompt``,
    at most `PROMPT_CHARS`), which a live preference judge shows its model; off by default,
    since prompts may hold what must not leave the gateway.
    """
    if Task(task) == Task.EMBEDDING:
        raise ValueError("shadow_completion serves chat completions; embeddings are not one")
    callback = install(emitter)
    rid = request_id or uuid.uuid4().hex
    started_ms = time.time_ns() // 1_000_000

    def call_kwargs(model: str, arm: Arm, extra: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**kwargs, **extra}
        tag = shadow_metadata(
            callback, request_id=rid, arm=arm, experiment=experiment, segment=segment,
            model=model, task=task, request_start_ms=started_ms, send_prompt=send_prompt,
        )  # fmt: skip
        merged["metadata"] = {**(merged.get("metadata") or {}), METADATA_KEY: tag}
        return {"model": model, "messages": messages, **merged}

    share = replica_share
    if share is None:
        share = emitter.replica_share if isinstance(emitter, ShadowEmitter) else 0.0
    shadows = [(Arm.CANDIDATE, call_kwargs(candidate_model, Arm.CANDIDATE, candidate_kwargs or {}))]
    if replica_sampled(rid, share):
        shadows.append((Arm.REPLICA, call_kwargs(primary_model, Arm.REPLICA, {})))
    for arm, call in shadows:  # `task` names the request's task here
        job = asyncio.create_task(_shadow_call(call), name=f"shadowlens-{arm}-{rid}")
        _background.add(job)
        job.add_done_callback(_background.discard)
    return await litellm.acompletion(**call_kwargs(primary_model, Arm.PRIMARY, {}))


async def _shadow_call(call: dict[str, Any]) -> None:
    try:
        response = await litellm.acompletion(**call)
        if call.get("stream"):
            async for _ in response:
                pass
    except Exception as exc:  # the callback has logged it as the candidate's error event
        log.debug("candidate call failed: %r", exc)


def _tag(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    params = kwargs.get("litellm_params") or {}
    metadata = params.get("metadata") or kwargs.get("metadata") or {}
    tag = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    return tag if isinstance(tag, dict) else None


def _is_async(kwargs: Mapping[str, Any]) -> bool:
    params = kwargs.get("litellm_params") or {}
    call_type = str(kwargs.get("call_type") or "")
    return bool(params.get("acompletion")) or call_type in _ASYNC_CALL_TYPES


_ASYNC_CALL_TYPES = {"acompletion", "atext_completion", "aresponses", "anthropic_messages"}


# --------------------------------------------------------------------------- mapping


def to_event(
    tag: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    response: Any,
    start_time: Any,
    end_time: Any,
    *,
    failed: bool,
) -> Event:
    """One LiteLLM call as a shadowlens event (pure: everything comes from the arguments)."""
    slo = kwargs.get("standard_logging_object") or {}
    start_s = _seconds(slo.get("startTime"), start_time)
    end_s = max(_seconds(slo.get("endTime"), end_time), start_s)
    request_start_ms = tag.get("request_start_ms")
    start_ms = round(start_s * 1000)
    if isinstance(request_start_ms, int):
        start_ms = min(start_ms, request_start_ms)  # both arms share the request's time
    common: dict[str, Any] = {
        "request_id": tag["request_id"],
        "experiment": tag["experiment"],
        "arm": Arm(tag["arm"]),
        "segment": tag["segment"],
        "task": Task(tag["task"]),
        "provider": str(tag.get("provider") or _provider(kwargs, slo, tag["model"])),
        "model": tag["model"],
        "start_time_ms": start_ms,
        "end_time_ms": round(end_s * 1000),
        "latency_ms": round((end_s - start_s) * 1000, 3),
        "mode": "shadow",
        "attributes": {"litellm.call_id": str(kwargs.get("litellm_call_id") or "")},
    }
    if failed:
        exc = kwargs.get("exception")
        error_info = slo.get("error_information") or {}
        error_type = type(exc).__name__ if exc is not None else error_info.get("error_class")
        timed_out = isinstance(exc, litellm.Timeout | TimeoutError) or error_type == "Timeout"
        return Event(
            **common,
            status=Status.TIMEOUT if timed_out else Status.ERROR,
            error_type=(error_type or "unknown")[:256],
        )
    usage = getattr(response, "usage", None)
    choice = (getattr(response, "choices", None) or [None])[0]
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    cost = kwargs.get("response_cost", slo.get("response_cost"))
    streamed = bool(kwargs.get("stream") or slo.get("stream"))
    first = kwargs.get("completion_start_time")
    first_s = slo.get("completionStartTime") or (_seconds(None, first) if first else None)
    response_model = getattr(response, "model", None)
    if response_model:
        common["attributes"]["gen_ai.response.model"] = str(response_model)
    if tag.get("send_prompt") and tag["arm"] == str(Arm.PRIMARY):
        prompt = prompt_text(kwargs.get("messages"))
        if prompt:
            common["attributes"]["prompt"] = prompt
    return Event(
        **common,
        status=Status.OK,
        ttft_ms=round(max(first_s - start_s, 0.0) * 1000, 3) if streamed and first_s else None,
        input_tokens=_tokens(usage, "prompt_tokens", slo),
        output_tokens=_tokens(usage, "completion_tokens", slo),
        cost_usd=float(cost) if isinstance(cost, int | float) and cost >= 0 else None,
        output=_output(Task(tag["task"]), content if isinstance(content, str) else None),
        finish_reason=_finish_reason(choice),
    )


def prompt_text(messages: Any) -> str:
    """The user's request: the last user message's text (string content, or the text
    parts of a multimodal one), cut at `PROMPT_CHARS`; "" when there is none."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, Mapping)]
            content = "\n".join(t for t in parts if isinstance(t, str))
        return content[:PROMPT_CHARS] if isinstance(content, str) else ""
    return ""


def _seconds(epoch_s: Any, moment: Any) -> float:
    """Epoch seconds from LiteLLM's float, else from its (naive, local) datetime."""
    if isinstance(epoch_s, int | float) and epoch_s > 0:
        return float(epoch_s)
    if isinstance(moment, datetime):
        return moment.timestamp()
    if isinstance(moment, int | float):
        return float(moment)
    return time.time()


def _tokens(usage: Any, name: str, slo: Mapping[str, Any]) -> int | None:
    value = getattr(usage, name, None) if usage is not None else slo.get(name)
    return value if isinstance(value, int) and value >= 0 else None


def _provider(kwargs: Mapping[str, Any], slo: Mapping[str, Any], model: str) -> str:
    provider = kwargs.get("custom_llm_provider") or slo.get("custom_llm_provider")
    if not provider:
        try:
            provider = litellm.get_llm_provider(model)[1]
        except Exception:
            provider = "unknown"
    return str(provider)[:128]


def _finish_reason(choice: Any) -> str | None:
    reason = getattr(choice, "finish_reason", None)
    return str(reason)[:64] if reason else None


def _output(task: Task, content: str | None) -> Output:
    """The answer where the task's comparator looks for it."""
    if content is None:
        return Output()
    if task == Task.CLASSIFICATION:
        return Output(text=content, label=content.strip())
    if task == Task.EXTRACTION:
        try:
            return Output(text=content, json=orjson.loads(content))
        except orjson.JSONDecodeError:
            return Output(text=content)
    return Output(text=content)
