-- One row per judge decision; its evidence as a Nested column (parallel arrays), so
--   SELECT experiment, epoch, action, evidence.metric, evidence.verdict, evidence.observed
--   FROM decisions FINAL ARRAY JOIN evidence WHERE evidence.verdict = 'fail'
-- gives one row per piece of evidence. Holds share their stage's epoch, so the key includes
-- decided_at: merges then collapse only true re-inserts of the same decision.
CREATE TABLE IF NOT EXISTS decisions
(
    experiment    LowCardinality(String),
    epoch         UInt64 COMMENT 'strictly increasing per experiment',
    action        LowCardinality(String) COMMENT 'promote | hold | rollback',
    from_percent  Float64,
    to_percent    Float64,
    decided_at    DateTime64(3, 'UTC') COMMENT 'event time (watermark) of the decision',
    reason        String,
    evidence Nested
    (
        metric               LowCardinality(String),
        segment              String,
        verdict              LowCardinality(String),
        observed             Nullable(Float64),
        reference            Nullable(Float64),
        threshold            Nullable(Float64),
        bound                Nullable(Float64),
        n                    UInt64,
        critical             Bool,
        reason               String,
        example_request_ids  Array(String)
    ),
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (experiment, epoch, decided_at)
COMMENT 'shadowlens: judge decisions with their evidence'
