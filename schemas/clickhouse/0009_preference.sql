-- The pairwise preference judge (issue 13): each pair's judged win and why a pair was not
-- judged, the judge's spend, the request it saw, and whether the candidate switched language
-- (the judge's guard). NULL where the judge was off or the pair was not eligible; older
-- rows read NULL.
ALTER TABLE pairs
    ADD COLUMN IF NOT EXISTS language_changed  Nullable(Bool) COMMENT 'the candidate answered in another language than the primary (comparators.language); NULL unless both are known' AFTER label_flip,
    ADD COLUMN IF NOT EXISTS preference        Nullable(Float64) COMMENT 'the judge''s verdict: the candidate''s win against the primary, 1 win, 0.5 tie, 0 loss (comparators.preference)' AFTER weight,
    ADD COLUMN IF NOT EXISTS preference_weight Float64 COMMENT '1 / p of the judge''s budgeted sample; 0 when not judged' AFTER preference,
    ADD COLUMN IF NOT EXISTS preference_skip   LowCardinality(Nullable(String)) COMMENT 'why an eligible pair was not judged: budget, unknown, self_judge, error, late' AFTER preference_weight,
    ADD COLUMN IF NOT EXISTS judge_cost_usd    Nullable(Float64) COMMENT 'what the judgment cost (both orders, retries included)' AFTER preference_skip,
    ADD COLUMN IF NOT EXISTS prompt            String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 30 DAY COMMENT 'the user request, when the gateway sent it (attribute prompt)' AFTER candidate_body
