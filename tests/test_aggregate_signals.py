"""comparators.aggregate: the LLM signals of a window's pairs, counted, paired and merged."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from shadowlens.comparators.aggregate import EXAMPLES, SIGNAL_KINDS, Aggregate, PairedCounts
from shadowlens.comparators.pairs import PairScore, score_orphan, score_pair

from tests.builders import added_and_merged, event

REFUSAL = "I'm sorry, but I can't assist with that."
ANSWER = "The capital of France is Paris, with about 2.1 million inhabitants."


def scored(rid: str, **signals: Any) -> PairScore:
    """A pair of identical successful answers with the given signal values."""
    base = score_pair(event(rid, text="ok"), event(rid, "candidate", text="ok"), {})
    return replace(base, **signals)


@pytest.mark.parametrize(
    ("signals", "counts", "kind"),
    [
        ({"primary_refusal": False, "candidate_refusal": True}, {"refusals": (1, 0, 1, 1, 0)},
         "refusal"),
        ({"primary_refusal": True, "candidate_refusal": False}, {"refusals": (1, 1, 0, 0, 1)},
         None),
        ({"primary_refusal": True, "candidate_refusal": True}, {"refusals": (1, 1, 1, 0, 0)},
         None),
        ({"primary_refusal": None, "candidate_refusal": True}, {"refusals": (0, 0, 0, 0, 0)},
         None),
        ({"primary_truncated": False, "candidate_truncated": True},
         {"truncations": (1, 0, 1, 1, 0)}, "truncation"),
        ({"primary_truncated": True, "candidate_truncated": False},
         {"truncations": (1, 1, 0, 0, 1)}, None),
        ({"number_mismatch": 0.5}, {"number_mismatches": 1}, "number_mismatch"),
        ({"number_mismatch": 0.0}, {"number_mismatches": 0}, None),
        ({"negation_mismatch": 2}, {"negation_mismatches": 1}, "negation_mismatch"),
        ({"negation_mismatch": 0}, {"negation_mismatches": 0}, None),
        ({"primary_json_valid": False, "candidate_json_valid": True},
         {"primary_invalid_json": 1, "candidate_invalid_json": 0}, None),
        ({"primary_json_valid": True, "candidate_json_valid": False, "json_schema_ok": False},
         {"candidate_invalid_json": 1, "schema_misfits": 1}, "invalid_json schema_misfit"),
        ({"json_schema_ok": False}, {"schema_misfits": 1}, "schema_misfit"),
        ({"label_flip": "positive->negative"}, {"label_flips": 1}, "label_flip"),
        ({"language_changed": True}, {"language_changes": 1, "language_seq": [1]},
         "language_change"),
        ({"language_changed": False}, {"language_changes": 0, "language_seq": [0]}, None),
    ],
)  # fmt: skip
def test_each_signal_is_counted_where_it_applies(
    signals: dict[str, Any], counts: dict[str, Any], kind: str | None
) -> None:
    agg = Aggregate()
    agg.add(scored("r1", **signals))
    for name, want in counts.items():
        got = getattr(agg, name)
        if isinstance(got, PairedCounts):
            got = (got.n, got.primary, got.candidate, got.only_candidate, got.only_primary)
        assert got == want, name
    for k in SIGNAL_KINDS:
        assert agg.examples(k) == (["r1"] if k in (kind or "").split() else []), k


def test_real_answers_through_score_pair() -> None:
    agg = Aggregate()
    agg.add(score_pair(event("a", text=ANSWER), event("a", "candidate", text=REFUSAL), {}))
    agg.add(score_pair(event("b", text=ANSWER), event("b", "candidate", text=ANSWER), {}))
    cut = event("c", "candidate", text=ANSWER[:20], finish_reason="length")
    agg.add(score_pair(event("c", text=ANSWER), cut, {}))
    agg.add(score_orphan(event("d"), "candidate", {}, 1_600_000))  # no signals: counts nowhere
    assert agg.refusals == PairedCounts(3, 0, 1, 1, 0)
    assert agg.truncations == PairedCounts(3, 0, 1, 1, 0)
    assert agg.number_mismatches == 2  # "2.1" missing from the refusal and the cut answer
    assert sorted(agg.examples("number_mismatch")) == ["a", "c"]  # by request, not arrival
    assert agg.examples("refusal") == ["a"] and agg.examples("truncation") == ["c"]
    assert agg.candidate_refused_seq == [1, 0, 0] and agg.primary_refused_seq == [0, 0, 0]
    assert agg.refusals.rate("candidate") == pytest.approx(1 / 3)
    assert agg.failures == PairedCounts(4, 0, 1, 1, 0)  # the orphan's missing candidate


def test_merge_equals_adding_everything_to_one() -> None:
    scores = [
        scored(
            f"r{i}",
            primary_refusal=i % 7 == 0,
            candidate_refusal=i % 5 == 0,
            primary_truncated=i % 11 == 0,
            candidate_truncated=i % 4 == 0,
            number_mismatch=0.5 if i % 6 == 0 else None,
            negation_mismatch=i % 9 == 0,
            candidate_json_valid=i % 8 != 0,
            json_schema_ok=i % 10 != 0,
            label_flip="a->b" if i % 13 == 0 else None,
            language_changed=i % 12 == 0,
        )
        for i in range(200)
    ]
    one, total = added_and_merged(scores)
    assert total.refusals == one.refusals and total.truncations == one.truncations
    assert one.refusals.only_candidate > 10 and one.truncations.only_primary > 5
    for name in (
        "number_mismatches",
        "negation_mismatches",
        "candidate_invalid_json",
        "schema_misfits",
        "label_flips",
        "language_changes",
    ):
        assert getattr(total, name) == getattr(one, name) > 0, name
    assert sorted(total.candidate_refused_seq) == sorted(one.candidate_refused_seq)
    assert sum(total.candidate_refused_seq) == one.refusals.candidate
    for kind in SIGNAL_KINDS:
        ids = total.examples(kind)
        assert len(ids) == EXAMPLES and set(ids) <= {s.request_id for s in scores}, kind
    summary = total.summary()
    assert summary.candidate_refused_seq == [] and summary.primary_refused_seq == []
    assert summary.refusals == one.refusals and summary.signal_ids == total.signal_ids
    assert total.refusals is not summary.refusals  # a copy: merging it leaves total alone
