-- The worker sends a pair on before its preference judgment and adds the judgment when it
-- comes (issue 13): a window that takes a judgment whose own window had closed moves one pair
-- from unjudged to judged while the pair is counted in the earlier window, so one window's
-- count may go below zero; sums over windows are exact.
ALTER TABLE windows
    MODIFY COLUMN preference_unjudged Int64 COMMENT 'eligible pairs without a judgment (budget, unknown, error, late, ...), less the late judgments this window took for pairs of closed windows'
