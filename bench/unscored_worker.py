"""`shadowlens worker` with no content scores: the ceiling arm of `bench/stream_throughput.py`.

    .venv/bin/python bench/unscored_worker.py worker

The one change: `score_pair` computes no content scores (label agreement, JSON diff,
lexical similarity, signals such as negation and refusal). Everything else the worker does
is the real worker's: decode, pair, latency/cost/status deltas, windows, judging, changelog,
transactions, ClickHouse. Its rate is therefore an upper bound on what any speed-up of the
comparators could give the worker (an optimistic one: with fewer scores the judge also has
fewer metrics to fold, and the rows are smaller). A measurement tool, never deployed.
"""

from __future__ import annotations

from shadowlens.cli.app import app
from shadowlens.comparators import pairs

# renamed, the patch below would change nothing and this arm would measure the scored worker
if not callable(getattr(pairs, "_content_scores", None)):
    raise SystemExit("bench/unscored_worker.py: comparators.pairs._content_scores is gone")
pairs._content_scores = lambda *args, **kwargs: {}

if __name__ == "__main__":
    app()
