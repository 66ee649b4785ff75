-- The worker sends a pair on before its semantic score and adds the score when it comes
-- (issue 15): a window that takes a score whose own window had closed moves one pair from
-- unsampled to measured while the pair is counted in the earlier window, so one window's
-- count may go below zero; sums over windows are exact.
ALTER TABLE windows
    MODIFY COLUMN quality_unsampled Int64 COMMENT 'pairs the semantic budget left unmeasured (or not scored yet), less the late scores this window took for pairs of closed windows'
