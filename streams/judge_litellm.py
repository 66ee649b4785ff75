"""The live preference judge: any OpenAI-compatible chat model through LiteLLM.

One judgment is two calls, the answers shown in both orders (primary as A, then the
candidate as A), so that a judge that favours a position gives a tie rather than a
preference (`comparators.preference.win_of`). Each call uses the documented prompt
(`comparators.preference.judge_messages`, docs/preference.md) at temperature 0, a timeout,
and up to `retries` more attempts, with backoff, on an error or an unreadable verdict; a
pair still without both verdicts is `Skip.ERROR`, never a guess. Every attempt that got an
answer is paid for: the policy's ``[prices.<model>]`` if it names the judge model, else
LiteLLM's price list, else 0 (a self-hosted judge).

Judgments are cached by a content hash of the judge model, the request and both answers,
so a repeated pair costs nothing. A judge model that serves one of the compared arms would
judge its own answers (self-preference): such pairs are `Skip.SELF_JUDGE` unless
`allow_self` says otherwise.

LiteLLM is imported here, on first use, with its price list read from the package
(``LITELLM_LOCAL_MODEL_COST_MAP``): no download at import.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from shadowlens.comparators.cost import Price, call_cost_usd
from shadowlens.comparators.preference import (
    Judged,
    JudgeItem,
    JudgeOutcome,
    Skip,
    Verdict,
    judge_messages,
    parse_verdict,
    serves_arm,
    win_of,
)

log = logging.getLogger(__name__)

MAX_TOKENS = 64  # "VERDICT: X", with room for a model that says a few words first
CACHE_ENTRIES = 10_000
BACKOFF_S = 0.25  # before the first retry; doubled for each further one


class JudgeUnavailable(RuntimeError):
    """LiteLLM is not installed; the message says how to get it."""


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise JudgeUnavailable(
            "the live judge needs LiteLLM: pip install 'shadowlens[litellm]'"
        ) from None
    litellm.suppress_debug_info = True  # its "Give Feedback" banner on every failed attempt
    return litellm


class LiteLLMJudge:
    """A `comparators.preference.PreferenceJudge` backed by a chat model."""

    def __init__(
        self,
        model: str,
        *,
        prices: Mapping[str, Price],
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        allow_self: bool = False,
    ) -> None:
        self.model = model
        self.name = f"litellm:{model}"
        self.prices = prices
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.allow_self = allow_self
        self.calls = 0  # chat completions sent, retries included
        self._litellm = _litellm()
        self._cache: OrderedDict[bytes, Judged] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, item: JudgeItem) -> JudgeOutcome:
        if not self.allow_self and serves_arm(
            self.model, (item.primary_model, item.candidate_model)
        ):
            return Skip.SELF_JUDGE
        key = self._key(item)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return Judged(cached.win)  # already paid for
        first, cost_1 = self._verdict(item.prompt, item.primary, item.candidate)
        if first is None:  # one order alone cannot cancel position bias: stop paying
            return Skip.ERROR
        second, cost_2 = self._verdict(item.prompt, item.candidate, item.primary)
        if second is None:
            return Skip.ERROR
        judged = Judged(win_of(first, second), cost_1 + cost_2)
        with self._lock:
            self._cache[key] = judged
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return judged

    def _key(self, item: JudgeItem) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for part in (self.model, item.prompt, item.primary, item.candidate):
            digest.update(part.encode())
            digest.update(b"\x00")
        return digest.digest()

    def _verdict(self, prompt: str, answer_a: str, answer_b: str) -> tuple[Verdict | None, float]:
        """One order's verdict and what its attempts cost; None after the last attempt."""
        messages = judge_messages(prompt, answer_a, answer_b)
        cost = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            with self._lock:
                self.calls += 1
            try:
                response = self._litellm.completion(
                    model=self.model,
                    messages=messages,
                    temperature=0,
                    max_tokens=MAX_TOKENS,
                    timeout=self.timeout_s,
                    api_base=self.api_base,
                    api_key=self.api_key,
                    num_retries=0,
                )
            except Exception as exc:  # LiteLLM maps every provider error to its own types
                log.warning("judge %s: attempt %d failed: %s", self.model, attempt + 1, exc)
                continue
            cost += self._cost(response)
            verdict = parse_verdict(response.choices[0].message.content or "")
            if verdict is not None:
                return verdict, cost
            log.warning("judge %s: no verdict in %r", self.model, response.choices[0].message)
        return None, cost

    def _cost(self, response: Any) -> float:
        usage = getattr(response, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        priced = call_cost_usd(None, self.model, tokens_in, tokens_out, self.prices)
        if priced is not None:
            return priced
        try:
            return float(self._litellm.completion_cost(completion_response=response))
        except Exception:  # a model LiteLLM has no price for: self-hosted, or a new one
            return 0.0
