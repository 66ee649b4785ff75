-- Clocks (issue 14): each pair's observed clock skew, and what event_time now means.
-- start_skew_ms is observed only (the report, shadowlens_clock_skew_seconds): pairing and
-- windows never compare two gateways' clocks. Older rows read NULL.
ALTER TABLE pairs
    ADD COLUMN IF NOT EXISTS start_skew_ms Nullable(Int64) COMMENT 'compared half''s start_time_ms minus the primary''s: the gateways'' clock offset plus dispatch delay' AFTER latency_delta_ms,
    COMMENT COLUMN event_time 'when the evidence was complete, on the primary''s clock: its start plus the slower arm''s latency_ms; an orphan''s pairing deadline (start + max_call_ms); a split call''s end'
