-- The pairwise preference judge per window (issue 13): judged and unjudged pairs, the
-- weighted win rate, the judge's spend, the worst-lost comparisons, and the language switches
-- the judge's guard counts. Older rows read 0 / NULL / empty.
ALTER TABLE windows
    ADD COLUMN IF NOT EXISTS language_changes    UInt64 COMMENT 'pairs whose candidate answered in another language' AFTER label_flips,
    ADD COLUMN IF NOT EXISTS preference_judged   UInt64 COMMENT 'pairs with the judge''s verdict' AFTER quality_sampled_fraction,
    ADD COLUMN IF NOT EXISTS preference_unjudged UInt64 COMMENT 'eligible pairs without one (budget, unknown, error, ...)' AFTER preference_judged,
    ADD COLUMN IF NOT EXISTS preference_win_rate Nullable(Float64) COMMENT 'the candidate''s win rate against the primary, ties half, weighted by 1 / p' AFTER preference_unjudged,
    ADD COLUMN IF NOT EXISTS judge_cost_usd      Float64 COMMENT 'what the window''s judgments cost' AFTER preference_win_rate,
    ADD COLUMN IF NOT EXISTS preference_lost_ids Array(String) COMMENT 'request ids of the comparisons the candidate lost worst' AFTER signal_example_ids
