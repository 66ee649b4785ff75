"""Pair comparators, on real AlpacaEval outputs where text matters."""

from __future__ import annotations

import math

import pytest
from shadowlens.comparators.cost import Price, call_cost_usd
from shadowlens.comparators.json_diff import json_diff
from shadowlens.comparators.pairs import (
    Outcome,
    embedding_cosine,
    score_orphan,
    score_pair,
    score_split,
)
from shadowlens.comparators.text import length_ratio, lexical_similarity, normalize
from shadowlens.schemas.events import Arm, Event, Output, Status, Task

from tests.builders import alpaca, event


def test_normalize_ignores_case_width_and_whitespace() -> None:
    assert normalize("  Hello\n\tWORLD ") == normalize("hello world")
    assert normalize("\uff21\uff22\uff23") == "abc"  # full-width letters (NFKC)
    # every Unicode whitespace run is one space, as with re's \s+; NFC only when unfolded
    assert normalize("a\u00a0\u2003 b\x1c\u3000c\r\n") == "a b c"
    assert normalize(" Caf\u0065\u0301  X ", fold=False) == "Caf\u00e9 X"


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        ("The cat sat.", "the  cat sat.", 1.0, 1.0),
        ("positive", "negative", 0.0, 0.8),
        ("a b c d", "d c b a", 1.0, 1.0),  # token-set: order does not matter
        ("", "something", 0.0, 0.0),
    ],
)
def test_lexical_similarity_table(a: str, b: str, low: float, high: float) -> None:
    assert low <= lexical_similarity(a, b) <= high


def test_lexical_similarity_orders_real_outputs() -> None:
    gpt4, concise = alpaca("gpt4_0613"), alpaca("gpt4_0613_concise")
    same_prompt = [lexical_similarity(gpt4[i]["output"], concise[i]["output"]) for i in range(50)]
    other_prompt = [
        lexical_similarity(gpt4[i]["output"], concise[i + 1]["output"]) for i in range(50)
    ]
    assert sum(same_prompt) / 50 > sum(other_prompt) / 50 + 0.05


def test_length_ratio() -> None:
    assert length_ratio("abcd", "ab") == 2.0
    assert length_ratio("abc", "") is None


def test_json_diff_reports_missing_extra_and_changed_paths() -> None:
    primary = {"name": "Ada", "tags": ["a", "b"], "age": 36, "ok": True, "a/b": 1}
    candidate = {"name": "Ada", "tags": ["a", "c", "d"], "age": 36.0, "ok": 1, "city": None}
    diff = json_diff(primary, candidate)
    assert diff.missing == ("/a~1b",)
    assert diff.extra == ("/city", "/tags/2")
    assert diff.changed == ("/ok", "/tags/1")  # true is not 1; 36 == 36.0
    assert diff.leaves == 6
    assert diff.field_agreement == pytest.approx(1 - 3 / 6)


def test_json_diff_identical_and_empty() -> None:
    assert json_diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}).field_agreement == 1.0
    assert json_diff({}, {}).field_agreement == 1.0
    assert json_diff({}, {"x": 1}).field_agreement == 0.0


def test_embedding_cosine() -> None:
    assert embedding_cosine((1.0, 0.0), (0.0, 2.0)) == pytest.approx(0.0)
    assert embedding_cosine((1.0, 1.0), (2.0, 2.0)) == pytest.approx(1.0)
    assert embedding_cosine((1.0,), (1.0, 2.0)) is None
    assert embedding_cosine((0.0, 0.0), (1.0, 0.0)) is None


def test_call_cost_prefers_reported_then_prices_tokens() -> None:
    prices = {"m": Price(input_per_mtok_usd=10.0, output_per_mtok_usd=30.0)}
    assert call_cost_usd(0.5, "m", 1, 1, prices) == 0.5
    assert call_cost_usd(None, "m", 1_000, 2_000, prices) == pytest.approx(0.07)
    assert call_cost_usd(None, "unknown", 1_000, 2_000, prices) is None
    assert call_cost_usd(None, "m", None, None, prices) is None


def test_score_pair_generation_on_real_outputs() -> None:
    gpt4, llama = alpaca("gpt4_0613")[3], alpaca("Meta-Llama-3-70B-Instruct")[3]
    prices = {"model-candidate": Price(1.0, 1.0)}
    primary = event(text=gpt4["output"], latency=2000, cost_usd=0.01)
    candidate = event(
        arm=Arm.CANDIDATE, text=llama["output"], latency=3000, input_tokens=100, output_tokens=900
    )
    s = score_pair(primary, candidate, prices)
    assert s.outcome == Outcome.PAIRED and s.comparison == "candidate"
    assert s.latency_ratio == pytest.approx(1.5) and s.latency_delta_ms == pytest.approx(1000)
    assert s.candidate_cost_usd == pytest.approx(0.001)
    assert s.cost_delta_usd == pytest.approx(0.001 - 0.01)
    assert 0.0 < s.lexical_similarity < 1.0 and s.exact_match is False
    assert s.quality == s.lexical_similarity
    assert s.length_ratio == pytest.approx(len(llama["output"]) / len(gpt4["output"]))
    assert s.error_disagreement is False and s.finish_reason_changed is False


def test_score_pair_label_embedding_and_extraction_tasks() -> None:
    lab = score_pair(
        event(task=Task.CLASSIFICATION, output=Output(label="Positive")),
        event(arm="candidate", task=Task.CLASSIFICATION, output=Output(label="negative")),
        {},
    )
    assert lab.label_agree is False and lab.quality == 0.0
    emb = score_pair(
        event(task=Task.EMBEDDING, output=Output(embedding=(1.0, 0.0))),
        event(arm="candidate", task=Task.EMBEDDING, output=Output(embedding=(1.0, 1.0))),
        {},
    )
    assert emb.quality == pytest.approx(1 / math.sqrt(2))
    ext = score_pair(
        event(task=Task.EXTRACTION, output=Output(json={"a": 1, "b": 2})),
        event(arm="candidate", task=Task.EXTRACTION, output=Output(json={"a": 1, "b": 3})),
        {},
    )
    assert ext.json_changed == ("/b",) and ext.quality == pytest.approx(0.5)
    assert ext.candidate_body == '{"a":1,"b":3}'


def test_score_pair_status_disagreement_and_finish_reason() -> None:
    s = score_pair(
        event(),
        event(arm="candidate", status=Status.TIMEOUT, text=None, error_type="deadline"),
        {},
    )
    assert s.error_disagreement is True and s.candidate_failed and not s.primary_failed
    assert s.quality is None and s.latency_ratio is None and s.label_agree is None
    t = score_pair(event(), event(arm="candidate", finish_reason="length"), {})
    assert t.finish_reason_changed is True


def test_orphans_count_against_the_missing_arm() -> None:
    missing_candidate = score_orphan(event(), "candidate", {}, 1_600_000)
    assert missing_candidate.outcome == Outcome.CANDIDATE_MISSING
    assert missing_candidate.event_time_ms == 1_600_000  # declared at its deadline
    assert missing_candidate.candidate_failed and not missing_candidate.primary_failed
    assert missing_candidate.primary_latency_ms == 1000.0
    missing_primary = score_orphan(event(arm="replica"), "primary", {}, 1_600_000)
    assert missing_primary.outcome == Outcome.PRIMARY_MISSING
    assert missing_primary.comparison == "replica" and missing_primary.primary_failed


def test_split_single_is_not_an_orphan() -> None:
    s = score_split(event(arm="candidate", mode="split"), {})
    assert s.outcome == Outcome.SPLIT and s.comparison == "candidate"
    assert s.candidate_latency_ms == 1000.0 and s.quality is None


def test_score_pair_normalises_once_yet_matches_text_lexical_similarity() -> None:
    gpt4, concise = alpaca("gpt4_0613"), alpaca("gpt4_0613_concise")
    for i in range(0, 800, 40):
        p, c = gpt4[i]["output"], concise[i]["output"]
        s = score_pair(event(text=p), event(arm="candidate", text=c), {})
        assert s.lexical_similarity == lexical_similarity(p, c)
        assert s.exact_match == (normalize(p) == normalize(c))
    same = score_pair(event(text="Hello  World"), event(arm="candidate", text="hello world"), {})
    assert same.exact_match and same.lexical_similarity == 1.0


def test_extraction_answered_as_json_text_is_diffed_field_by_field() -> None:
    def ext(arm: str, text: str) -> Event:
        return event(arm=arm, task=Task.EXTRACTION, text=text)

    p = ext("primary", '{"city": "Köln", "zip": "50667"}')
    same_city = score_pair(p, ext("candidate", '{"city": "Köln", "zip": "50668"}'), {})
    assert same_city.json_changed == ("/zip",) and same_city.quality == pytest.approx(0.5)
    broken = score_pair(p, ext("candidate", '{"city": "Köln", '), {})
    assert broken.quality == 0.0 and broken.candidate_json_valid is False
    neither = score_pair(ext("primary", "no JSON"), ext("candidate", "none here"), {})
    assert neither.json_field_agreement is None and neither.quality is None
