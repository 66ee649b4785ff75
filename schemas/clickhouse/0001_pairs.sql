-- One row per request pair, as scored by comparators.pairs.PairScore.
-- Orphans (the other arm never arrived) and split-mode singles are rows too: see `outcome`.
-- Re-inserting a pair (crash replay) collapses to one row per sorting key; query with FINAL
-- (or argMax(..., inserted_at)) for exact counts before background merges have run.
-- Bodies are cleared 30 days after they were stored (column TTL on inserted_at, applied on
-- merges): keyed on insertion, not event time, so a replay of old traffic keeps its bodies.
CREATE TABLE IF NOT EXISTS pairs
(
    experiment               LowCardinality(String),
    segment                  LowCardinality(String),
    event_time               DateTime64(3, 'UTC'),
    request_id               String,
    comparison               LowCardinality(String) COMMENT 'arm compared with the primary: candidate | replica',
    outcome                  LowCardinality(String) COMMENT 'paired | candidate_missing | primary_missing | split',
    task                     LowCardinality(String),
    mode                     LowCardinality(String),
    primary_model            LowCardinality(String),
    primary_provider         LowCardinality(String),
    candidate_model          LowCardinality(String),
    candidate_provider       LowCardinality(String),
    primary_status           LowCardinality(String) COMMENT 'ok | error | timeout | missing',
    candidate_status         LowCardinality(String) COMMENT 'ok | error | timeout | missing',
    primary_failed           Bool COMMENT 'status is not ok (a missing half counts as failed)',
    candidate_failed         Bool COMMENT 'status is not ok (a missing half counts as failed)',
    primary_error_type       LowCardinality(Nullable(String)),
    candidate_error_type     LowCardinality(Nullable(String)),
    primary_latency_ms       Nullable(Float64),
    candidate_latency_ms     Nullable(Float64),
    primary_ttft_ms          Nullable(Float64),
    candidate_ttft_ms        Nullable(Float64),
    latency_ratio            Nullable(Float64) COMMENT 'candidate / primary latency, both ok',
    latency_delta_ms         Nullable(Float64) COMMENT 'candidate - primary latency, both ok',
    primary_cost_usd         Nullable(Float64),
    candidate_cost_usd       Nullable(Float64),
    cost_delta_usd           Nullable(Float64),
    primary_output_tokens    Nullable(UInt64),
    candidate_output_tokens  Nullable(UInt64),
    length_ratio             Nullable(Float64),
    primary_finish_reason    LowCardinality(Nullable(String)),
    candidate_finish_reason  LowCardinality(Nullable(String)),
    finish_reason_changed    Nullable(Bool),
    error_disagreement       Nullable(Bool),
    exact_match              Nullable(Bool),
    label_agree              Nullable(Bool),
    embedding_cosine         Nullable(Float64),
    lexical_similarity       Nullable(Float64),
    semantic_similarity      Nullable(Float64),
    json_field_agreement     Nullable(Float64),
    json_missing             Array(String),
    json_extra               Array(String),
    json_changed             Array(String),
    quality                  Nullable(Float64) COMMENT 'the task headline agreement in [0, 1] (PairScore.quality)',
    weight                   Float64 COMMENT 'inverse sampling probability of the costly scores',
    primary_body             String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 30 DAY,
    candidate_body           String CODEC(ZSTD(3)) TTL toDateTime(inserted_at) + INTERVAL 30 DAY,
    inserted_at              DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (experiment, segment, event_time, request_id, comparison)
COMMENT 'shadowlens: one row per scored request pair (orphans and split singles included)'
