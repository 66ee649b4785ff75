"""The `preference` metric: does a judge prefer the candidate's answers, and are they still
answers?

For free-text generation, similarity to the primary is not quality (DESIGN.md): a pairwise
judge (`shadowlens.comparators.preference`) says which answer is better. The metric is the
candidate's win rate against the primary, ties counting half, with an always-valid bound
(`BoundedMeanCS` over the judged pairs). An identical candidate ties every pair, so it sits
exactly at parity (0.5) and needs no replica arm to be judged.

A judge can be fooled too (AlpacaEval's adversarial null model wins 77 % against GPT-4
Turbo), so the win rate passes only together with a guard that the answers stay answers:

- lexical similarity to the primary's answers above ``min_lexical_similarity`` (off-topic
  text, gibberish and another language all fall far below real answers: 0.32 for a constant
  judge-addressed answer against 0.58-0.68 for five real models on AlpacaEval);
- no collapse of length: the geometric mean of candidate / primary length above
  ``min_length_ratio``;
- no switch of language on more than ``max_language_change`` of the answers;
- no refusal regression (the stage's `refusal_rate` verdict is not a failure).

FAIL when the win rate's upper bound is below ``min_win_rate`` or a guard check's bound is
past its limit; PASS when the win rate's lower bound clears it and every guard check's
bound is within its limit; INCONCLUSIVE otherwise. The reason gives the length-adjusted win
rate (`shadowlens.judge.stats_length`) beside the raw one.

The evidence does not depend on the traffic share (in shadow mode the candidate answers
every request), so it is carried across promotions and restarts only with a rollback
(`shadowlens.judge.decide`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from shadowlens.comparators.aggregate import Aggregate, LengthBins, merged
from shadowlens.judge.classify import Alphas
from shadowlens.judge.evidence_state import _bounded, gaussian
from shadowlens.judge.policy import Policy
from shadowlens.judge.stats_length import length_adjusted_win_rate
from shadowlens.judge.stats_means import BoundedMeanCS, mixture_rho
from shadowlens.judge.verdicts import Evidence, Metric, Verdict

PARITY = 0.5


@dataclass(frozen=True, slots=True)
class PreferenceEvidence:
    """One segment's judged pairs and guard observations since the experiment's last
    rollback, with the sequential states built from them."""

    totals: Aggregate = field(default_factory=Aggregate)
    win: BoundedMeanCS = field(default_factory=_bounded)
    lexical: BoundedMeanCS = field(default_factory=_bounded)
    language: BoundedMeanCS = field(default_factory=_bounded)

    def fold(self, window: Aggregate) -> PreferenceEvidence:
        """Add one closed window, its observations in request-key order (`decide` hands
        windows over `Aggregate.in_order`)."""
        return PreferenceEvidence(
            totals=merged([self.totals, window]).summary(),
            win=self.win.update(window.preference_seq),
            lexical=self.lexical.update(window.lexical_seq),
            language=self.language.update(window.language_seq),
        )

    @property
    def length_adjusted(self) -> float | None:
        bins = self.totals.preference_by_length
        return length_adjusted_win_rate(LengthBins.centers(), bins.wins, bins.counts)


@dataclass(frozen=True, slots=True)
class Check:
    """One guard check: proven past its limit (`fail`), proven within it (`ok`), or neither."""

    name: str
    fail: bool
    ok: bool
    text: str
    examples: tuple[str, ...] = ()


def _similarity(ev: PreferenceEvidence, policy: Policy, alpha: Alphas) -> Check:
    lex, floor, need = ev.lexical, policy.preference.min_lexical_similarity, policy.judge.min_pairs
    if lex.n < need:
        return Check("similarity", False, False, f"{lex.n} text pairs, {need} needed")
    _, hi = lex.interval(alpha.fail)
    lo, _ = lex.interval(alpha.pass_)
    text = f"lexical similarity {lex.mean:.2f} in [{lo:.2f}, {hi:.2f}] (floor {floor:.2f})"
    return Check("similarity", hi < floor, lo >= floor, text, tuple(ev.totals.examples("quality")))


def _length(ev: PreferenceEvidence, policy: Policy, alpha: Alphas) -> Check:
    log_len, floor = gaussian(ev.totals.log_length_ratio), policy.preference.min_length_ratio
    need, optimal_n = policy.judge.min_pairs, policy.judge.optimal_n
    if log_len.n < need:
        return Check("length", False, False, f"{log_len.n} text pairs, {need} needed")
    _, hi = log_len.interval(alpha.fail, mixture_rho(optimal_n, alpha.fail))
    lo, _ = log_len.interval(alpha.pass_, mixture_rho(optimal_n, alpha.pass_))
    text = (
        f"length x{math.exp(log_len.mean):.2f} of the primary's in "
        f"[x{math.exp(lo):.2f}, x{math.exp(hi):.2f}] (floor x{floor:g})"
    )
    return Check("length", hi < math.log(floor), lo >= math.log(floor), text)


def _language(ev: PreferenceEvidence, policy: Policy, alpha: Alphas) -> Check:
    lang, most = ev.language, policy.preference.max_language_change
    if lang.n < policy.judge.min_pairs:  # few answers in a known language: nothing to guard
        return Check("language", False, True, f"language known for {lang.n} answers only")
    lo, _ = lang.interval(alpha.fail)
    _, hi = lang.interval(alpha.pass_)
    text = f"language switched in {lang.mean:.1%} in [{lo:.1%}, {hi:.1%}] (limit {most:.0%})"
    return Check(
        "language", lo > most, hi <= most, text, tuple(ev.totals.examples("language_change"))
    )


def _refusals(refusals: Evidence) -> Check:
    failed = refusals.verdict == Verdict.FAIL
    text = f"refusals {'regressed' if failed else 'did not regress'} ({refusals.verdict})"
    return Check("refusals", failed, not failed, text, refusals.example_request_ids)


def guard(ev: PreferenceEvidence, policy: Policy, alpha: Alphas, refusals: Evidence) -> list[Check]:
    """The checks that keep answers answers, whatever the judge prefers."""
    return [
        _similarity(ev, policy, alpha),
        _length(ev, policy, alpha),
        _language(ev, policy, alpha),
        _refusals(refusals),
    ]


def defer_quality(quality: Evidence, totals: Aggregate) -> Evidence:
    """The `quality` verdict where the judge covers every pair it reads (the judge is on and
    the segment's quality pairs are its eligible text pairs): no verdict of its own, since
    similarity to the primary is not quality but the judge's guard. Its numbers stay, and
    without the judge's pass it is uncertified (`certifies_quality`). Elsewhere (judge off,
    labels, JSON fields, embeddings) it is unchanged."""
    eligible = totals.preference_judged + totals.preference_unjudged
    if quality.verdict == Verdict.NODATA or not eligible or eligible < totals.quality_measured:
        return quality
    return replace(
        quality,
        verdict=Verdict.NODATA,
        bound=None,
        reason="left to the preference judge (similarity is its guard): " + quality.reason,
        example_request_ids=(),
    )


def certifies_quality(evidence: Iterable[Evidence]) -> bool:
    """Whether the judge passed the candidate over all segments ("*"): its win rate cleared
    the floor and the guard held, so generation quality is certified without a similarity
    reference (`shadowlens.judge.standing`)."""
    return any(
        e.metric == Metric.PREFERENCE and e.segment == "*" and e.verdict == Verdict.PASS
        for e in evidence
    )


def classify_preference(
    ev: PreferenceEvidence, segment: str, policy: Policy, alpha: Alphas, refusals: Evidence
) -> Evidence:
    """The win rate against `min_win_rate` and the guard; `refusals` is the segment's
    refusal verdict in this stage."""
    pol, need = policy.preference, policy.judge.min_pairs
    n, totals = ev.win.n, ev.totals
    eligible = totals.preference_judged + totals.preference_unjudged
    judged = f"judged {totals.preference_judged} of {eligible} eligible pairs"
    if n < need:
        return Evidence(
            Metric.PREFERENCE, segment, Verdict.NODATA, None, PARITY, pol.min_win_rate, n,
            pol.critical, reason=f"{n} judged pairs, {need} needed ({judged})",
        )  # fmt: skip
    _, f_hi = ev.win.interval(alpha.fail)
    p_lo, p_hi = ev.win.interval(alpha.pass_)
    rate, limit = ev.win.mean, pol.min_win_rate
    checks = guard(ev, policy, alpha, refusals)
    tripped = [c for c in checks if c.fail]
    lost = f_hi < limit
    fail = lost or bool(tripped)
    ok = p_lo >= limit and all(c.ok for c in checks)
    adjusted = ev.length_adjusted
    reason = (
        f"candidate wins {rate:.1%} of comparisons (ties half) in [{p_lo:.1%}, {p_hi:.1%}]"
        + ("" if adjusted is None else f", length-adjusted {adjusted:.1%}")
        + f" (floor {limit:.0%}, parity 50%; {judged})"
    )
    pending = [c for c in checks if not c.ok]
    if tripped:
        reason += "; judge-fooling guard: " + "; ".join(c.text for c in tripped)
    elif pending:
        reason += "; guard not settled: " + "; ".join(c.text for c in pending)
    else:
        reason += "; guard held (similarity, length, language, refusals)"
    examples = totals.examples("preference") if lost else [i for c in tripped for i in c.examples]
    return Evidence(
        Metric.PREFERENCE,
        segment,
        Verdict.FAIL if fail else Verdict.PASS if ok else Verdict.INCONCLUSIVE,
        observed=rate,
        reference=PARITY,
        threshold=limit,
        n=n,
        critical=pol.critical,
        bound=f_hi if lost else p_lo,
        reason=reason,
        example_request_ids=tuple(dict.fromkeys(examples))[:5] if fail else (),
    )
