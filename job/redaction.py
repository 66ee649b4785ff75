"""Redaction mode: keep hashes and lengths, never prompt or response bodies.

For deployments where outputs must not leave the gateway's trust boundary. Hashes still
let an analyst see that two responses were identical, and lengths still drive the length
ratio; the comparators have already run on the real text before anything is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from shadowlens.comparators.pairs import PairScore
from shadowlens.job.sinks import Sink
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter


def fingerprint(data: bytes) -> str:
    """`sha256:<first 16 hex> len=<bytes>`: enough to match equal bodies, not to read them."""
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]} len={len(data)}"


def redact_score(score: PairScore) -> PairScore:
    return replace(
        score,
        primary_body=fingerprint(score.primary_body.encode()) if score.primary_body else "",
        candidate_body=fingerprint(score.candidate_body.encode()) if score.candidate_body else "",
        prompt=fingerprint(score.prompt.encode()) if score.prompt else "",
        # a classification's labels are its bodies: the flip keeps only its fingerprint
        label_flip=fingerprint(score.label_flip.encode()) if score.label_flip else None,
    )


def redact_letter(letter: DeadLetter) -> DeadLetter:
    """The reason, detail and request id stay; the bytes become their fingerprint."""
    return replace(letter, raw=fingerprint(letter.raw).encode())


@dataclass
class RedactingSink:
    """Wraps a sink so that nothing downstream ever sees a body."""

    inner: Sink

    def pairs(self, scores: Sequence[PairScore]) -> None:
        self.inner.pairs([redact_score(s) for s in scores])

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        self.inner.windows(windows)

    def decisions(self, decisions: Sequence[Decision]) -> None:
        self.inner.decisions(decisions)

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.inner.dead_letters([redact_letter(x) for x in letters])
