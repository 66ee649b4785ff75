-- LLM-specific signals of each pair (comparators.signals, issue 5): what a similarity score
-- cannot see. NULL where a signal does not apply (an arm failed or missing, no text, not an
-- extraction task, no labels). Older rows read NULL.
ALTER TABLE pairs
    ADD COLUMN IF NOT EXISTS primary_refusal      Nullable(Bool) COMMENT 'the primary declined the task (refusal wording, or a content_filter finish reason)' AFTER json_changed,
    ADD COLUMN IF NOT EXISTS candidate_refusal    Nullable(Bool) COMMENT 'the candidate declined the task' AFTER primary_refusal,
    ADD COLUMN IF NOT EXISTS primary_truncated    Nullable(Bool) COMMENT 'finish reason says the token limit cut the answer (length | max_tokens)' AFTER candidate_refusal,
    ADD COLUMN IF NOT EXISTS candidate_truncated  Nullable(Bool) COMMENT 'finish reason says the token limit cut the answer' AFTER primary_truncated,
    ADD COLUMN IF NOT EXISTS number_mismatch      Nullable(Float64) COMMENT 'Jaccard distance of the two answers'' sets of numbers; NULL if neither has one' AFTER candidate_truncated,
    ADD COLUMN IF NOT EXISTS negation_mismatch    Nullable(UInt32) COMMENT 'aligned clauses of opposite negation polarity (a cheap contradiction proxy)' AFTER number_mismatch,
    ADD COLUMN IF NOT EXISTS primary_json_valid   Nullable(Bool) COMMENT 'extraction: the primary answered valid JSON' AFTER negation_mismatch,
    ADD COLUMN IF NOT EXISTS candidate_json_valid Nullable(Bool) COMMENT 'extraction: the candidate answered valid JSON' AFTER primary_json_valid,
    ADD COLUMN IF NOT EXISTS json_schema_ok       Nullable(Bool) COMMENT 'extraction: the candidate JSON fits the policy schema, else the shape of the primary JSON' AFTER candidate_json_valid,
    ADD COLUMN IF NOT EXISTS label_flip           LowCardinality(Nullable(String)) COMMENT 'classification: primary->candidate label when they differ' AFTER json_schema_ok
