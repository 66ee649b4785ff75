"""bench/decision_quality.py by concern: the replayed corpus, scenarios and seeded runs, the
judge's fast path, the Flagger- and Kayenta-style baselines, the judge prototypes, the
process pool that runs them all, and the report."""
