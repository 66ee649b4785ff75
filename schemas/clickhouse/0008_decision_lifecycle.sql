-- The lifecycle of each decision (judge/lifecycle.py, docs/operations.md): the phase it left
-- the experiment in, what blocks a rolled-back experiment, the step a proposal waits to have
-- approved, who made a decision by command (the operator's key id) and why, and when the
-- old deployment may be decommissioned. Commands can decide at the event time and epoch of a
-- judge's hold, so the command id joins the sorting key: merges then never collapse a
-- command's decision into the judge's.
ALTER TABLE decisions
    ADD COLUMN IF NOT EXISTS phase LowCardinality(String) DEFAULT 'ramping'
        COMMENT 'ramping | rolled_back | paused | awaiting_approval | stability | complete | aborted',
    ADD COLUMN IF NOT EXISTS `blocking.metric` Array(LowCardinality(String)),
    ADD COLUMN IF NOT EXISTS `blocking.segment` Array(String),
    ADD COLUMN IF NOT EXISTS proposal_action LowCardinality(String) DEFAULT ''
        COMMENT 'promote | rollback waiting for approve; empty when none',
    ADD COLUMN IF NOT EXISTS proposal_percent Nullable(Float64),
    ADD COLUMN IF NOT EXISTS command LowCardinality(String) DEFAULT ''
        COMMENT 'resume | pause | abort | approve for a decision made by an operator',
    ADD COLUMN IF NOT EXISTS command_id String,
    ADD COLUMN IF NOT EXISTS operator_key_id String COMMENT 'who: the key that signed it',
    ADD COLUMN IF NOT EXISTS operator_reason String COMMENT 'why, in the operator''s words',
    ADD COLUMN IF NOT EXISTS decommission_after Nullable(DateTime64(3, 'UTC'))
        COMMENT 'at 100 %: event time after which the old deployment may be decommissioned',
    MODIFY ORDER BY (experiment, epoch, decided_at, command_id)
