"""The batch scoring path gives every score the per-pair path gives, on all 805 AlpacaEval
instructions for real migrations (issue 15); and the shortcuts both paths share give what
the definitions they replaced gave: RapidFuzz's token-set ratio, the former normalisation,
and `_Side`'s negated clauses."""

from __future__ import annotations

import dataclasses
import sys
import unicodedata
from dataclasses import replace

import pytest
from rapidfuzz import fuzz
from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.signals import _Side, may_negate
from shadowlens.comparators.text import normalize, token_set_similarity, words
from shadowlens.job.scoring import Scorer
from shadowlens.judge.policy import load_policy
from shadowlens.pipeline.pairing import Matched
from shadowlens.schemas.events import Arm, Event, Status

from tests.builders import SHARED_DATA, alpaca, event

pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "alpaca_eval").is_dir(), reason="../shared/data is not present"
)

# (primary, candidate, replica's outputs): migrations from the data's README; the replica
# arm re-reads each primary answer in a second pair of the same batch
MIGRATIONS = [
    ("gpt-3.5-turbo-0613", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0613"),
    ("gpt4_0613", "gpt4_1106_preview", "gpt4_0613_concise"),
    ("claude-2", "claude-2.1", "claude-2"),
    ("gpt4_0613", "Meta-Llama-3-70B-Instruct", "gpt4_0613_verbose"),
]


def texts(model: str) -> list[str]:
    return [row["output"] for row in alpaca(model)]


def half(i: int, arm: Arm, model: str, text: str) -> Event:
    """Some halves fail or hit the token limit, so those branches are compared too."""
    status = Status.ERROR if i % 97 == 5 and arm != Arm.PRIMARY else Status.OK
    finish = "length" if i % 31 == 3 else "stop"
    return event(f"r{i}", arm, text=text, model=model, status=status, finish_reason=finish)


def migration_steps(primary: str, candidate: str, replica: str) -> list[Matched]:
    """One pairing step per instruction: the primary with its candidate and its replica."""
    steps = []
    for i, (p, c, r) in enumerate(
        zip(texts(primary), texts(candidate), texts(replica), strict=True)
    ):
        first = half(i, Arm.PRIMARY, primary, p)
        pairs = ((first, half(i, Arm.CANDIDATE, candidate, c)),)
        steps.append(Matched(pairs=(*pairs, (first, half(i, Arm.REPLICA, replica, r)))))
    return steps


def same(a: PairScore, b: PairScore) -> list[str]:
    """The fields that differ (NaN equals NaN)."""
    differ = []
    for f in dataclasses.fields(PairScore):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not (x == y and type(x) is type(y)) and not (x != x and y != y):
            differ.append(f"{f.name}: {x!r} != {y!r}")
    return differ


@pytest.mark.parametrize(("primary", "candidate", "replica"), MIGRATIONS)
def test_batch_path_scores_what_the_per_pair_path_scores(
    primary: str, candidate: str, replica: str
) -> None:
    steps = migration_steps(primary, candidate, replica)
    steps.append(  # an orphan and a split single between the pairs keep their place
        Matched(
            orphans=((event("o", text="x"), "candidate", 5),), singles=(event("s", mode="split"),)
        )
    )
    reference, batch = Scorer(load_policy()), Scorer(load_policy())
    expected = [s for m in steps for s in reference.score(m)]
    got = batch.score_batch(steps)
    assert len(got) == len(expected) == 2 * 805 + 2
    for e, g in zip(expected, got, strict=True):
        assert not same(e, g), (e.request_id, e.comparison, same(e, g))
    assert batch.counts == reference.counts


def former_normalize(text: str) -> str:
    """`text.normalize` as it was: NFKC, whitespace runs collapsed, then casefolded."""
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split()).casefold()


def test_words_lexical_similarity_and_negation_cues_match_their_definitions() -> None:
    every = [t for p, c, r in MIGRATIONS for m in (p, c, r) for t in texts(m)]
    for t in every:
        assert " ".join(words(t)) == normalize(t) == former_normalize(t)
        assert may_negate(t) or not _Side(t).negated()  # no cue: no negated clause
    for primary, candidate, _ in MIGRATIONS:
        for a, b in zip(texts(primary), texts(candidate), strict=True):
            ours = token_set_similarity(set(words(a)), set(words(b)))
            assert ours == fuzz.token_set_ratio(normalize(a), normalize(b)) / 100


def test_casefolding_maps_no_character_to_or_from_whitespace() -> None:
    """Why `words` may casefold before splitting (and still equal `former_normalize`)."""
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        folded = ch.casefold()
        if folded != ch:
            assert folded and not ch.isspace() and not any(c.isspace() for c in folded), cp


def test_a_repeated_answer_is_read_once_in_a_batch() -> None:
    """Same answers in two requests of one batch: scored alike, as the per-pair path."""
    a, b = texts("gpt4_0613")[7], texts("claude-2")[7]
    steps = [
        Matched(pairs=((event(rid, text=a), event(rid, Arm.CANDIDATE, text=b)),))
        for rid in ("r1", "r2")
    ]
    one, two = Scorer(load_policy()).score_batch(steps)
    assert not same(replace(one, request_id="r2"), two)
