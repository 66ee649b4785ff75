"""What holds a migration beyond one stage's verdicts: its segments, its unresolved
failures and whether its quality is certified at all.

A stage passing on the traffic it saw is not enough:

* Segments come and go (batch jobs, time zones). Every segment seen in the experiment is
  judged in every decision, on this stage's evidence or on what was carried since the last
  rollback (and the evidence says which); one with no evidence at all since the last
  rollback holds promotion.
* Segment names are client-supplied strings. `judge.max_segments` splits the error budget,
  so at most that many are judged: when one more arrives, the smallest named segment and
  every later newcomer are judged together as `(other)`, counted and named in the
  decision, and the split holds.
* A (metric, segment) that failed keeps holding promotion until it passes on fresh data,
  whether or not its traffic stops.
* Quality without a reference (`shadowlens.judge.classify.classify_quality`) is not
  certified: with `quality.require_reference` it holds promotion, and every decision says
  so either way, unless the preference judge passes the candidate
  (`shadowlens.judge.preference.certifies_quality`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from shadowlens.judge.classify import is_uncertified
from shadowlens.judge.policy import Policy
from shadowlens.judge.preference import certifies_quality
from shadowlens.judge.verdicts import Blocker, Evidence, Metric, Verdict
from shadowlens.pipeline.cardinality import OTHER_SEGMENT as OTHER  # windows merge there too

ALL_SEGMENTS = "*"
REMEMBERED = 64  # merged segment names kept for the decision's reason (and for the count)


@dataclass(frozen=True, slots=True)
class Segments:
    """The segments judged under their own name, and those judged as `(other)`."""

    named: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()  # the first REMEMBERED names judged as `(other)`
    more: bool = False  # more than REMEMBERED were merged

    def judged(self, segment: str) -> str:
        """The name a raw segment is judged under."""
        return segment if segment in self.named else OTHER

    def admit(self, raw: Iterable[str], size: Callable[[str], int], cap: int) -> Segments:
        """Room for the new segments among `raw`, the largest first: a name of its own
        while there are fewer than `cap`, else `(other)`, which takes the place of the
        smallest named one."""
        out = self
        for segment in sorted(set(raw) - set(self.named), key=lambda s: (-size(s), s)):
            if segment in (OTHER, ALL_SEGMENTS):  # reserved: judged as `(other)`
                continue
            if len(out.named) < cap:
                out = replace(out, named=(*out.named, segment))
                continue
            if OTHER not in out.named:
                smallest = min(out.named, key=lambda s: (size(s), s))
                named = tuple(OTHER if s == smallest else s for s in out.named)
                out = replace(out, named=named)._merged(smallest)
            out = out._merged(segment)
        return out

    def _merged(self, segment: str) -> Segments:
        if segment in self.merged:
            return self
        if len(self.merged) >= REMEMBERED:
            return replace(self, more=True)
        return replace(self, merged=(*self.merged, segment))

    @property
    def renamed(self) -> str | None:
        """The named segment whose evidence became `(other)`'s, if one did."""
        return self.merged[0] if self.merged else None

    def note(self, cap: int) -> str:
        """What `(other)` holds, for the decision's reason ("" when nothing was merged)."""
        if not self.merged:
            return ""
        count = f"more than {len(self.merged)}" if self.more else str(len(self.merged))
        shown = ", ".join(self.merged[:5]) + (", ..." if len(self.merged) > 5 else "")
        return f"{OTHER} judges {count} segments beyond judge.max_segments = {cap}: {shown}"


def unresolved(known: Sequence[Blocker], evidence: Sequence[Evidence]) -> tuple[Blocker, ...]:
    """Failures still holding: the known ones without a pass now, and new failures."""
    verdicts = {(e.metric, e.segment): e.verdict for e in evidence}
    kept = [b for b in known if verdicts.get((b.metric, b.segment)) != Verdict.PASS]
    new = [Blocker(e.metric, e.segment) for e in evidence if e.verdict == Verdict.FAIL]
    return tuple(dict.fromkeys([*kept, *new]))


def holds(evidence: Sequence[Evidence], failed: Sequence[Blocker], policy: Policy) -> list[str]:
    """Why promotion waits beyond the stage's own verdicts (empty when nothing holds)."""
    need = policy.judge.min_pairs
    failing = {(e.metric, e.segment) for e in evidence if e.verdict == Verdict.FAIL}
    out = [
        f"{b.metric} [{b.segment}] failed and has not passed since"
        for b in failed
        if (b.metric, b.segment) not in failing
    ]
    out += [
        f"segment {e.segment} has too little evidence yet ({e.n} of {need} requests since "
        "the start or the last rollback)"
        for e in evidence
        if e.metric == Metric.ERROR_RATE and e.segment != ALL_SEGMENTS and e.n < need
    ]
    out += [
        f"{e.metric} [{e.segment}] inconclusive past its limit"
        for e in evidence
        if e.segment != ALL_SEGMENTS and e.verdict == Verdict.INCONCLUSIVE and _leans_bad(e)
    ]
    if policy.quality.require_reference and not certifies_quality(evidence):
        out += [
            f"quality [{e.segment}] not certified (no reference)"
            for e in evidence
            if e.segment == ALL_SEGMENTS and is_uncertified(e, need)
        ]
    return out


def _leans_bad(e: Evidence) -> bool:
    """Quality below its floor or refusals above their limit, though not provably: the
    worst segment holds the ramp (latency and errors: `decide._worst_segment_blocks`)."""
    if e.observed is None or e.threshold is None:
        return False
    if e.metric == Metric.QUALITY:
        return e.observed < e.threshold
    return e.metric == Metric.REFUSAL_RATE and e.observed > e.threshold


def notes(evidence: Sequence[Evidence], segments: Segments, policy: Policy) -> str:
    """What every decision must say beyond its step: uncertified quality, `(other)`."""
    out = []
    need = policy.judge.min_pairs
    if any(is_uncertified(e, need) for e in evidence if e.segment == ALL_SEGMENTS):
        out.append(
            "quality certified by the preference judge (similarity is its guard)"
            if certifies_quality(evidence)
            else "quality not certified: no reference yet (no replica arm with enough pairs, "
            "no [quality.reference] for the task)"
        )
    merged = segments.note(policy.judge.max_segments)
    if merged:
        out.append(merged)
    return "; ".join(out)
