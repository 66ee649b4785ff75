"""comparators.preference: recorded judgments looked up by content, the live judge's verdict
parsing and order combination, and who may judge whom."""

from __future__ import annotations

import pytest
from shadowlens.comparators.preference import (
    AnnotationError,
    Judged,
    JudgeItem,
    RecordedJudge,
    RecordedJudgments,
    Skip,
    Verdict,
    judge_messages,
    parse_verdict,
    serves_arm,
    win_of,
)

PRIMARY = "Paris is the capital of France."
CANDIDATE = "The capital of France is Lyon."


def annotation(output_1: str, output_2: str, preference: float | None) -> dict[str, object]:
    return {
        "instruction": "What is the capital of France?",
        "output_1": output_1,
        "generator_1": "gpt4_1106_preview",
        "output_2": output_2,
        "generator_2": "other",
        "preference": preference,
    }


def test_a_pair_is_found_in_either_order_with_the_preference_flipped() -> None:
    table = RecordedJudgments.from_annotations([annotation(PRIMARY, CANDIDATE, 1.2)])
    assert table.win(PRIMARY, CANDIDATE) == pytest.approx(0.2)  # output_2's win
    assert table.win(CANDIDATE, PRIMARY) == pytest.approx(0.8)  # the same pair, swapped
    assert table.win(f"  {PRIMARY}\n", CANDIDATE.replace(" ", "  ")) == pytest.approx(0.2)
    assert table.win(PRIMARY, "Marseille.") is None


def test_null_preferences_are_left_out_repeats_averaged_and_bad_ones_refused() -> None:
    table = RecordedJudgments.from_annotations(
        [
            annotation(PRIMARY, CANDIDATE, 2.0),
            annotation(PRIMARY, CANDIDATE, 1.0),  # the same pair judged twice: the mean
            annotation(PRIMARY, "Marseille.", None),  # the judge failed on it
        ]
    )
    assert table.win(PRIMARY, CANDIDATE) == pytest.approx(0.5)
    assert table.win(PRIMARY, "Marseille.") is None and len(table) == 2
    with pytest.raises(AnnotationError, match="not in \\[1, 2\\]"):
        RecordedJudgments.from_annotations([annotation(PRIMARY, CANDIDATE, 3.0)])
    with pytest.raises(AnnotationError, match="record 0"):
        RecordedJudgments.from_annotations([{"output_1": PRIMARY}])


def test_the_recorded_judge_never_guesses() -> None:
    judge = RecordedJudge(RecordedJudgments.from_annotations([annotation(PRIMARY, CANDIDATE, 1.0)]))
    assert judge(JudgeItem("r", "", PRIMARY, CANDIDATE)) == Judged(0.0)
    assert judge(JudgeItem("r", "", PRIMARY, "unknown")) == Skip.UNKNOWN


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("VERDICT: A", Verdict.A),
        ("verdict: b", Verdict.B),
        ("VERDICT: TIE", Verdict.TIE),
        ("**VERDICT:** B", Verdict.B),
        ("Answer A is wrong about Lyon.\nVERDICT: B", Verdict.B),
        ("VERDICT: A\n...on reflection, VERDICT: B", Verdict.B),  # the last one counts
        ("B", Verdict.B),
        (" tie. ", Verdict.TIE),
        ("Both are fine.", None),
        ("A or B, hard to say", None),
        ("", None),
    ],
)
def test_parse_verdict(reply: str, verdict: Verdict | None) -> None:
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize(
    ("primary_first", "candidate_first", "win"),
    [
        (Verdict.B, Verdict.A, 1.0),  # the candidate wins in both positions
        (Verdict.A, Verdict.B, 0.0),
        (Verdict.A, Verdict.A, 0.5),  # a judge that always picks A: position, not quality
        (Verdict.B, Verdict.B, 0.5),
        (Verdict.TIE, Verdict.TIE, 0.5),
        (Verdict.B, Verdict.TIE, 0.75),
    ],
)
def test_both_orders_cancel_position_bias(
    primary_first: Verdict, candidate_first: Verdict, win: float
) -> None:
    assert win_of(primary_first, candidate_first) == win


def test_the_prompt_shows_the_request_and_both_answers_between_markers() -> None:
    system, user = judge_messages("Capital of France?", PRIMARY, CANDIDATE)
    assert system["role"] == "system" and "VERDICT: A" in system["content"]
    assert "longer answer" in system["content"] and "order" in system["content"]
    text = user["content"]
    assert text.index("Capital of France?") < text.index(PRIMARY) < text.index(CANDIDATE)
    assert "not recorded" in judge_messages("", PRIMARY, CANDIDATE)[1]["content"]


@pytest.mark.parametrize(
    ("judge", "arms", "serves"),
    [
        ("openai/gpt-4-1106-preview", ("gpt4_1106_preview", "claude-2"), True),
        ("gpt-3.5-turbo-1106", ("gpt4_1106_preview", "gpt-3.5-turbo-1106"), True),
        ("azure/GPT-4o", ("gpt-4o", "x"), True),
        ("openai/gpt-4o-mini", ("gpt-4o", "claude-2"), False),
        ("hosted_vllm/meta-llama/Meta-Llama-3-70B-Instruct", ("Meta-Llama-3-70B-Instruct",), True),
        ("openai/judge", ("", ""), False),
    ],
)
def test_a_judge_that_serves_an_arm_is_recognised(
    judge: str, arms: tuple[str, ...], serves: bool
) -> None:
    assert serves_arm(judge, arms) is serves
