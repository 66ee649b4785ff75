-- LLM signals per window (comparators.aggregate, issue 5): paired refusal and truncation tables
-- (the judge's refusal_rate reads refusals with McNemar, like errors), counts of the other
-- signals with example request ids, and the semantic sampling share of the window's quality.
-- Older rows read 0 / empty / NULL.
ALTER TABLE windows
    ADD COLUMN IF NOT EXISTS refusal_pairs            UInt64 COMMENT 'pairs where both arms answered with text (refusal known for both)' AFTER exact_matches,
    ADD COLUMN IF NOT EXISTS primary_refusals         UInt64 AFTER refusal_pairs,
    ADD COLUMN IF NOT EXISTS candidate_refusals       UInt64 AFTER primary_refusals,
    ADD COLUMN IF NOT EXISTS only_candidate_refused   UInt64 COMMENT 'McNemar b of refusals' AFTER candidate_refusals,
    ADD COLUMN IF NOT EXISTS only_primary_refused     UInt64 COMMENT 'McNemar c of refusals' AFTER only_candidate_refused,
    ADD COLUMN IF NOT EXISTS truncation_pairs         UInt64 COMMENT 'pairs where both arms gave a finish reason' AFTER only_primary_refused,
    ADD COLUMN IF NOT EXISTS primary_truncations      UInt64 AFTER truncation_pairs,
    ADD COLUMN IF NOT EXISTS candidate_truncations    UInt64 AFTER primary_truncations,
    ADD COLUMN IF NOT EXISTS only_candidate_truncated UInt64 COMMENT 'the candidate was cut off where the primary was not' AFTER candidate_truncations,
    ADD COLUMN IF NOT EXISTS only_primary_truncated   UInt64 AFTER only_candidate_truncated,
    ADD COLUMN IF NOT EXISTS number_mismatches        UInt64 COMMENT 'pairs whose answers'' number sets differ' AFTER only_primary_truncated,
    ADD COLUMN IF NOT EXISTS negation_mismatches      UInt64 COMMENT 'pairs with a clause of opposite negation polarity' AFTER number_mismatches,
    ADD COLUMN IF NOT EXISTS primary_invalid_json     UInt64 COMMENT 'extraction answers that are not JSON' AFTER negation_mismatches,
    ADD COLUMN IF NOT EXISTS candidate_invalid_json   UInt64 AFTER primary_invalid_json,
    ADD COLUMN IF NOT EXISTS schema_misfits           UInt64 COMMENT 'candidate JSON off the schema (or the primary JSON shape)' AFTER candidate_invalid_json,
    ADD COLUMN IF NOT EXISTS label_flips              UInt64 AFTER schema_misfits,
    ADD COLUMN IF NOT EXISTS quality_measured         UInt64 COMMENT 'pairs with a measured quality, each counted once' AFTER quality_var,
    ADD COLUMN IF NOT EXISTS quality_unsampled        UInt64 COMMENT 'pairs the semantic budget left unmeasured' AFTER quality_measured,
    ADD COLUMN IF NOT EXISTS quality_sampled_fraction Nullable(Float64) COMMENT 'quality_measured / (measured + unsampled); 1 without sampling' AFTER quality_unsampled,
    ADD COLUMN IF NOT EXISTS signal_example_ids       Map(LowCardinality(String), Array(String)) COMMENT 'kind (refusal, truncation, number_mismatch, ...) -> example request ids' AFTER candidate_failed_ids
