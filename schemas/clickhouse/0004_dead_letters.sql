-- Inputs that could not be processed, with the original bytes unaltered in `raw` (String holds
-- arbitrary bytes; clickhouse-connect shows invalid UTF-8 as hex unless the column is read with
-- column_formats={'raw': 'bytes'}).
CREATE TABLE IF NOT EXISTS dead_letters
(
    received_at  DateTime64(3, 'UTC'),
    reason       LowCardinality(String),
    detail       String,
    request_id   Nullable(String),
    source       String COMMENT 'topic/partition/offset or file:line',
    raw          String CODEC(ZSTD(3)),
    raw_bytes    UInt64 MATERIALIZED length(raw),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (reason, received_at)
COMMENT 'shadowlens: rejected input, kept byte for byte'
