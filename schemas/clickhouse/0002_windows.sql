-- One row per closed event-time window of (experiment, segment, comparison): the numbers the
-- judge read. Latency quantiles come from DDSketch (1 % relative accuracy); *_n/_mean/_var are
-- weighted moments, so windows can be pooled without the raw pairs.
CREATE TABLE IF NOT EXISTS windows
(
    experiment                 LowCardinality(String),
    segment                    LowCardinality(String),
    comparison                 LowCardinality(String),
    window_start               DateTime64(3, 'UTC'),
    window_end                 DateTime64(3, 'UTC'),
    first_event_time           Nullable(DateTime64(3, 'UTC')),
    last_event_time            Nullable(DateTime64(3, 'UTC')),
    n_requests                 UInt64 COMMENT 'paired + candidate_missing + primary_missing',
    n_paired                   UInt64,
    n_candidate_missing        UInt64,
    n_primary_missing          UInt64,
    n_split                    UInt64,
    primary_failures           UInt64,
    candidate_failures         UInt64,
    only_candidate_failed      UInt64 COMMENT 'McNemar b',
    only_primary_failed        UInt64 COMMENT 'McNemar c',
    exact_matches              UInt64,
    late_pairs                 UInt64,
    pairing_rate               Nullable(Float64),
    primary_error_rate         Nullable(Float64),
    candidate_error_rate       Nullable(Float64),
    quality_n                  Float64,
    quality_mean               Nullable(Float64),
    quality_var                Nullable(Float64),
    log_latency_ratio_n        Float64,
    log_latency_ratio_mean     Nullable(Float64),
    log_latency_ratio_var      Nullable(Float64),
    primary_latency_p50_ms     Nullable(Float64),
    primary_latency_p95_ms     Nullable(Float64),
    primary_latency_p99_ms     Nullable(Float64),
    candidate_latency_p50_ms   Nullable(Float64),
    candidate_latency_p95_ms   Nullable(Float64),
    candidate_latency_p99_ms   Nullable(Float64),
    primary_cost_n             Float64,
    primary_cost_mean_usd      Nullable(Float64),
    candidate_cost_n           Float64,
    candidate_cost_mean_usd    Nullable(Float64),
    worst_quality_ids          Array(String) COMMENT 'request ids of the lowest quality pairs',
    slowest_ratio_ids          Array(String) COMMENT 'request ids of the highest latency ratios',
    candidate_failed_ids       Array(String),
    inserted_at                DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (experiment, segment, comparison, window_start)
COMMENT 'shadowlens: one row per closed event-time window'
