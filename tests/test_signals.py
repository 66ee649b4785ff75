"""LLM-specific pair signals (comparators/signals.py), on real AlpacaEval outputs.

Real examples are AlpacaEval instruction indexes (positions in ../shared/data/alpaca_eval/*.json,
the `index` of replay/data/alpaca_sample.json); hand-written texts only where the sample has
no such data (JSON extraction, contradictions made on purpose).
"""

from __future__ import annotations

import re

import pytest
from shadowlens.comparators.pairs import Outcome, score_pair
from shadowlens.comparators.signals import (
    UNPARSED,
    conforms,
    is_refusal,
    is_truncated,
    label_flip,
    negation_mismatch,
    number_mismatch,
    numbers,
    pair_signals,
    parse_json,
    schema_ok,
)
from shadowlens.job.redaction import fingerprint, redact_score
from shadowlens.report.distributions import agreement_table
from shadowlens.report.rows import Agreement
from shadowlens.schemas.events import Output, Status, Task
from shadowlens.streams.wire import decode_pairs, encode_pairs

from tests.builders import alpaca, event


def out(model: str, index: int) -> str:
    return alpaca(model)[index]["output"]


# ---- refusal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "index"),
    [
        ("gpt4_0613", 296),  # "Sorry, but I can't assist with that."
        ("gpt4_0613", 267),  # "I'm sorry, but as an AI, I'm unable to browse ... I recommend"
        ("gpt4_0613", 618),  # "... unable to access real-time data. However, you can find ..."
        ("gpt4_0613", 458),  # "As an AI, I don't have real-time capabilities to provide ..."
        ("gpt-3.5-turbo-1106", 260),  # "I'm sorry, but I cannot fulfill that request."
        ("gpt-3.5-turbo-1106", 379),  # "... can't provide a table ... However, you can ..."
        ("claude-2", 126),  # "I apologize, but I do not feel comfortable providing ..."
        ("Meta-Llama-3-8B-Instruct", 96),  # "I can't provide information on how to ..."
    ],
)
def test_real_refusals_are_detected(model: str, index: int) -> None:
    assert is_refusal(out(model, index))


@pytest.mark.parametrize(
    ("model", "index"),
    [
        ("gpt4_0613", 127),  # "I'm sorry to hear about your friend's loss. ..."
        ("gpt4_0613", 521),  # "I'm sorry to hear about your stressful situation. ..."
        ("gpt4_0613", 39),  # "As an assistant, I can't make a decision for you, but I can ..."
        ("gpt4_0613", 254),  # "As an AI, I don't have the ability ... However, I can provide"
        ("gpt4_0613", 264),  # "As an AI, I don't hold beliefs. However, I can tell you ..."
        ("gpt4_0613", 493),  # "... I can't provide ... However, I can generate sentences ..."
        ("gpt4_0613_concise", 254),  # "... can't provide a summary ... However, common ..."
        ("gpt-3.5-turbo-1106", 513),  # "I cannot directly execute ... However, the given code ..."
    ],
)
def test_sympathy_and_disclaimers_followed_by_an_answer_are_not_refusals(
    model: str, index: int
) -> None:
    assert not is_refusal(out(model, index))


def test_refusal_false_positives_on_all_805_gpt4_0613_outputs() -> None:
    """The five flagged answers were read by hand: each declines the task (no false positive);
    294 (a Malbolge program, declined after 380 characters) is the one refusal missed."""
    flagged = [i for i, row in enumerate(alpaca("gpt4_0613")) if is_refusal(row["output"])]
    assert flagged == [207, 267, 296, 458, 618]


def test_refusal_by_finish_reason_and_curly_apostrophes() -> None:
    assert is_refusal("", "content_filter")
    assert is_refusal("I\u2019m sorry, but I can\u2019t help with that.")
    assert not is_refusal("Sorry for the delay! Here is the summary you asked for.")


# ---- truncation -----------------------------------------------------------------------------


def test_truncation_from_finish_reasons() -> None:
    assert is_truncated("length") and is_truncated("max_tokens")
    assert is_truncated("stop") is False and is_truncated(None) is None
    full = out("gpt4_0613", 3)
    s = pair_signals(
        event(text=full, finish_reason="stop"),
        event(arm="candidate", text=full[: len(full) // 2], finish_reason="length"),
    )
    assert s.candidate_truncated is True and s.primary_truncated is False


# ---- numbers --------------------------------------------------------------------------------


def test_numbers_canonical_forms() -> None:
    assert numbers("1,200 people (45%) in 2017; 3.50 vs 3.5") == {"1200", "45%", "2017", "3.5"}
    assert numbers("1. apples\n2) pears\n 3. plums") == frozenset()  # list markers
    assert numbers("IP3, #FFA07A and 1,2,3") == {"1", "2", "3"}  # not inside words
    assert number_mismatch("It takes 3 days.", "It takes 5 days.") == 1.0
    assert number_mismatch("It takes 3 days.", "Three days.") == 1.0  # number words: unseen
    assert number_mismatch("no numbers", "none here") is None


def test_number_mismatch_on_real_answers() -> None:
    # 622: "The 14% tip on $47.50 would be $6.65." -- the concise model says the same
    assert number_mismatch(out("gpt4_0613", 622), out("gpt4_0613_concise", 622)) == 0.0
    # 50: the Yamato's keel was laid in 1937 and launched in 1940; gpt-3.5 gives other years
    assert numbers(out("gpt4_0613", 50)) == {"1937", "1940"}
    assert number_mismatch(out("gpt4_0613", 50), out("gpt-3.5-turbo-1106", 50)) == 1.0


# ---- negation -------------------------------------------------------------------------------


def test_negation_contradictions_hand_written() -> None:
    compatible = "The charger is compatible with the phone."
    assert negation_mismatch(compatible, compatible.replace("is", "is not")) == 1
    assert negation_mismatch("This pan isn't oven safe.", "This pan is oven safe.") == 1
    assert negation_mismatch("It is not safe.", "It is not safe at all.") == 0
    assert negation_mismatch("Paris is the capital.", "Berlin is a city.") == 0


def test_negation_on_real_answers() -> None:
    # 631 "offensive or not offensive": gpt4 and its concise sibling both say "not offensive"
    gpt4 = out("gpt4_0613", 631)
    assert gpt4 == "The text is not offensive."
    assert negation_mismatch(gpt4, out("gpt4_0613_concise", 631)) == 0
    assert negation_mismatch(gpt4, "The text is offensive.") == 1
    # 141: "they do not have a caloric value" vs concise "hence they have a caloric value"
    assert negation_mismatch(out("gpt4_0613", 141), out("gpt4_0613_concise", 141)) == 1
    # 53: "Caesar never officially acknowledged" vs gpt-3.5 "Caesar openly acknowledged"
    assert negation_mismatch(out("gpt4_0613", 53), out("gpt-3.5-turbo-1106", 53)) >= 1
    # 97: "No, human blood is always some shade of red" vs "human blood is always red": the
    # leading "No," answers the question; 136: "none other than Gandalf" is no negation
    assert negation_mismatch(out("gpt4_0613", 97), out("gpt4_0613_concise", 97)) == 0
    assert negation_mismatch(out("gpt4_0613", 136), out("gpt4_0613_concise", 136)) == 0


def test_negation_ignores_code_blocks() -> None:
    code = "```python\ndef f(x, y=None):\n    return x\n```"
    assert negation_mismatch(code, code.replace("y=None", "y")) == 0


# ---- JSON -----------------------------------------------------------------------------------


def test_json_validity_and_inferred_shape() -> None:
    assert parse_json('{"a": 1}') == {"a": 1}
    assert parse_json('```json\n{"a": 1}\n```') is UNPARSED  # fenced: not what a parser takes
    primary = {"name": "Ada", "age": 36, "tags": ["x"], "addr": {"city": "Köln"}, "note": None}
    assert conforms({**primary, "age": 36.5, "extra": 1}, primary)  # numbers are numbers
    assert not conforms({**primary, "age": "36"}, primary)
    assert not conforms({k: v for k, v in primary.items() if k != "addr"}, primary)
    assert not conforms({**primary, "tags": [1]}, primary)
    assert not conforms({**primary, "age": True}, primary)  # a bool is no number in JSON


def test_json_signals_of_an_extraction_pair() -> None:
    p = event(task=Task.EXTRACTION, output=Output(json={"city": "Köln", "zip": "50667"}))
    as_text = event(arm="candidate", task=Task.EXTRACTION, text='{"city": "Köln", "zip": 50667}')
    broken = event(arm="candidate", task=Task.EXTRACTION, text='{"city": "Köln", "zip": ')
    s = pair_signals(p, as_text)
    assert s.primary_json_valid and s.candidate_json_valid and s.json_schema_ok is False
    assert pair_signals(p, broken).candidate_json_valid is False
    schema = {"type": "object", "required": ["city"], "properties": {"zip": {"type": "integer"}}}
    assert pair_signals(p, as_text, schema).json_schema_ok is True
    assert schema_ok({"zip": 1}, schema) is False
    assert pair_signals(event(), event(arm="candidate")).candidate_json_valid is None


# ---- labels ---------------------------------------------------------------------------------


def _category(answer: str, labels: tuple[str, ...]) -> str:
    """The label an answer names first (AlpacaEval answers label in prose)."""
    found = [(m.start(), label) for label in labels for m in re.finditer(label, answer, re.I)]
    return min(found)[1]


def test_label_flip_on_a_real_classification() -> None:
    # 637: "Classify the tweet into one of ... event, demo, or news"
    labels = ("event", "demo", "news")
    gpt4 = _category(out("gpt4_0613", 637), labels)
    llama = _category(out("Meta-Llama-3-8B-Instruct", 637), labels)
    s = score_pair(
        event(task=Task.CLASSIFICATION, output=Output(label=gpt4)),
        event(arm="candidate", task=Task.CLASSIFICATION, output=Output(label=llama)),
        {},
    )
    assert s.label_flip == "demo->news" and s.label_agree is False
    assert label_flip("Positive", " positive") is None
    assert label_flip(None, "x") is None


# ---- wiring: score_pair, the wire format, redaction -----------------------------------------


def test_score_pair_carries_signals_and_they_travel_the_wire() -> None:
    s = score_pair(
        event(text=out("gpt4_0613", 296)),
        event(arm="candidate", text=out("gpt-3.5-turbo-1106", 296), finish_reason="length"),
        {},
    )
    assert s.primary_refusal and s.candidate_refusal and s.candidate_truncated
    assert s.negation_mismatch == 0 and s.number_mismatch is None and s.label_flip is None
    labelled = score_pair(
        event(task=Task.CLASSIFICATION, output=Output(label="spam")),
        event(arm="candidate", task=Task.CLASSIFICATION, output=Output(label="ham")),
        {},
    )
    back = [x for record in encode_pairs([s, labelled]) for x in decode_pairs(record)]
    assert back == [s, labelled]
    # redaction mode stores no answer, and a label is the answer of a classification
    assert redact_score(labelled).label_flip == fingerprint(b"spam->ham")
    assert redact_score(s).label_flip is None


def test_failed_arm_has_no_content_signals() -> None:
    s = score_pair(event(), event(arm="candidate", status=Status.ERROR, text=None), {})
    assert s.outcome == Outcome.PAIRED
    assert s.candidate_refusal is None and s.negation_mismatch is None
    assert s.primary_truncated is None


def test_report_shows_signal_rates_in_the_agreement_table() -> None:
    row = Agreement("candidate", 10, 0.9, {"candidate_refusal": 0.1, "number_mismatch": 0.25})
    html = agreement_table([row])
    assert '<td class="l">refusals</td><td>10.0 %</td>' in html
    assert "0.250" in html and "valid JSON" not in html  # absent signals get no row
