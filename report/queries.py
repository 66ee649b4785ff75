"""The report's SQL, in one place: every query the report runs against the store.

Kept apart from the Python that reads their rows so a reviewer of the SQL sees all of it,
and the constants the SQL and the row parsing share (CDF levels, quality bins) live once.
"""

from __future__ import annotations

CDF_LEVELS = tuple(i / 100 for i in range(101))
QUALITY_BINS = 20
LOST_COMPARISONS = 8  # the comparisons the candidate lost that the report shows

_LEVELS_SQL = ", ".join(f"{q:g}" for q in CDF_LEVELS)

# Every query reads one experiment ({experiment:String}); pairs and decisions are
# ReplacingMergeTree tables: pairs are read with FINAL, decisions without it, deduplicated
# per (epoch, decided_at, command_id), their sorting key, so a re-inserted decision shows once.
QUERIES: dict[str, str] = {
    "experiments": "SELECT DISTINCT experiment FROM pairs ORDER BY experiment",
    "overview": """
        SELECT comparison,
               count() AS rows,
               countIf(outcome = 'paired') AS paired,
               countIf(outcome = 'candidate_missing') AS candidate_missing,
               countIf(outcome = 'primary_missing') AS primary_missing,
               countIf(outcome = 'split') AS split,
               min(event_time) AS first_event,
               max(event_time) AS last_event
        FROM pairs FINAL
        WHERE experiment = {experiment:String}
        GROUP BY comparison
        ORDER BY comparison""",
    "segments": """
        SELECT if(grouping(segment) = 1, '', segment) AS seg,
               grouping(segment) = 1 AS is_total,
               count() AS n,
               countIf(outcome != 'split') AS n_requests,
               countIf(outcome = 'paired') AS paired,
               avgWeightedIf(quality, weight, quality IS NOT NULL) AS mean_quality,
               quantilesIf(0.5, 0.95, 0.99)(primary_latency_ms, primary_status = 'ok')
                   AS primary_latency_ms_q,
               quantilesIf(0.5, 0.95, 0.99)(candidate_latency_ms, candidate_status = 'ok')
                   AS candidate_latency_ms_q,
               countIf(primary_failed AND outcome != 'split') AS primary_failures,
               countIf(candidate_failed AND outcome != 'split') AS candidate_failures,
               avg(primary_cost_usd) AS primary_cost,
               avg(candidate_cost_usd) AS candidate_cost
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND comparison = 'candidate'
        GROUP BY ROLLUP(segment)
        ORDER BY is_total, seg""",
    "latency_cdf": f"""
        SELECT quantilesIf({_LEVELS_SQL})(primary_latency_ms, primary_status = 'ok')
                   AS primary,
               quantilesIf({_LEVELS_SQL})(candidate_latency_ms, candidate_status = 'ok')
                   AS candidate,
               countIf(primary_status = 'ok' AND primary_latency_ms IS NOT NULL)
                   AS n_primary,
               countIf(candidate_status = 'ok' AND candidate_latency_ms IS NOT NULL)
                   AS n_candidate
        FROM pairs FINAL
        WHERE experiment = {{experiment:String}} AND comparison = 'candidate'""",
    "quality_histogram": f"""
        SELECT comparison,
               least(toUInt32(floor(quality * {QUALITY_BINS})), {QUALITY_BINS - 1}) AS bin,
               count() AS n
        FROM pairs FINAL
        WHERE experiment = {{experiment:String}} AND quality IS NOT NULL
        GROUP BY comparison, bin
        ORDER BY comparison, bin""",
    "agreement": """
        SELECT comparison,
               countIf(quality IS NOT NULL) AS n,
               avgWeightedIf(quality, weight, quality IS NOT NULL) AS mean_quality,
               avg(toFloat64(exact_match)) AS mean_exact_match,
               avg(toFloat64(label_agree)) AS mean_label_agree,
               avg(semantic_similarity) AS mean_semantic_similarity,
               avg(lexical_similarity) AS mean_lexical_similarity,
               avg(embedding_cosine) AS mean_embedding_cosine,
               avg(json_field_agreement) AS mean_json_field_agreement,
               avg(toFloat64(finish_reason_changed)) AS mean_finish_reason_changed,
               avg(toFloat64(primary_refusal)) AS mean_primary_refusal,
               avg(toFloat64(candidate_refusal)) AS mean_candidate_refusal,
               avg(toFloat64(primary_truncated)) AS mean_primary_truncated,
               avg(toFloat64(candidate_truncated)) AS mean_candidate_truncated,
               avg(number_mismatch) AS mean_number_mismatch,
               avg(toFloat64(negation_mismatch > 0)) AS mean_negation_flip,
               avg(toFloat64(candidate_json_valid)) AS mean_candidate_json_valid,
               avg(toFloat64(json_schema_ok)) AS mean_json_schema_ok
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND outcome = 'paired'
        GROUP BY comparison
        ORDER BY comparison""",
    "arms": """
        SELECT 'primary' AS role,
               groupUniqArrayIf(5)(primary_provider, primary_provider != '') AS providers,
               groupUniqArrayIf(5)(primary_model, primary_model != '') AS models,
               countIf(primary_status != 'missing') AS calls,
               quantilesIf(0.5, 0.95, 0.99)(primary_latency_ms, primary_status = 'ok')
                   AS latency_ms,
               countIf(primary_failed AND outcome != 'split') AS failures,
               countIf(outcome != 'split') AS judged,
               CAST(NULL AS Nullable(Float64)) AS mean_quality,
               avg(primary_cost_usd) AS mean_cost
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND comparison = 'candidate'
        UNION ALL
        SELECT comparison AS role,
               groupUniqArrayIf(5)(candidate_provider, candidate_provider != ''),
               groupUniqArrayIf(5)(candidate_model, candidate_model != ''),
               countIf(candidate_status != 'missing'),
               quantilesIf(0.5, 0.95, 0.99)(candidate_latency_ms, candidate_status = 'ok'),
               countIf(candidate_failed AND outcome != 'split'),
               countIf(outcome != 'split'),
               avgWeightedIf(quality, weight, quality IS NOT NULL),
               avg(candidate_cost_usd)
        FROM pairs FINAL
        WHERE experiment = {experiment:String}
        GROUP BY comparison""",
    # the compared half's start minus its primary's: clock offset plus dispatch delay
    "clock_skew": """
        SELECT comparison AS arm, candidate_provider AS provider, count() AS pairs,
               quantiles(0.01, 0.5, 0.99)(start_skew_ms) AS skew_ms
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND start_skew_ms IS NOT NULL
        GROUP BY comparison, candidate_provider
        ORDER BY comparison, provider""",
    # policy.limits: pairs of segments no closed window holds (judged as "(other)"), and
    # whether the experiment has any window at all (none: beyond max_experiments, or no
    # window closed yet)
    "limits": """
        WITH (SELECT groupUniqArray(segment) FROM windows FINAL
              WHERE experiment = {experiment:String}) AS windowed,
             (SELECT max(window_end) FROM windows FINAL
              WHERE experiment = {experiment:String}) AS closed_until
        SELECT countIf(NOT has(windowed, segment) AND event_time < closed_until) AS pairs,
               uniqExactIf(segment, NOT has(windowed, segment) AND event_time < closed_until)
                   AS segments,
               length(windowed) AS windowed_segments
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND comparison = 'candidate'""",
    # the preference judge: every eligible pair (judged or why not), and the comparisons
    # the candidate lost worst, both answers side by side
    "preference_pairs": """
        SELECT request_id, segment, preference, preference_skip AS skip, length_ratio,
               judge_cost_usd AS cost_usd
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND comparison = 'candidate'
          AND (preference IS NOT NULL OR preference_skip IS NOT NULL)""",
    "preference_lost": f"""
        SELECT request_id, segment, preference, prompt, primary_model,
               primary_body AS primary, candidate_model, candidate_body AS candidate
        FROM pairs FINAL
        WHERE experiment = {{experiment:String}} AND comparison = 'candidate'
          AND preference < 0.5
        ORDER BY preference, cityHash64(request_id)
        LIMIT {LOST_COMPARISONS}""",
    "decisions": """
        SELECT epoch, decided_at, action, from_percent, to_percent, reason, phase,
               command_id, operator_key_id, decommission_after,
               evidence.metric AS metric, evidence.segment AS segment,
               evidence.verdict AS verdict, evidence.observed AS observed,
               evidence.reference AS reference, evidence.threshold AS threshold,
               evidence.bound AS bound, evidence.n AS n, evidence.critical AS critical,
               evidence.reason AS evidence_reason,
               evidence.example_request_ids AS example_request_ids
        FROM
        (
            SELECT * FROM decisions
            WHERE experiment = {experiment:String}
            ORDER BY inserted_at DESC
            LIMIT 1 BY epoch, decided_at, command_id
        )
        LEFT ARRAY JOIN evidence
        ORDER BY decided_at, epoch, inserted_at, command_id""",
    # dead letters carry no experiment (most could not be parsed): all of them, by reason
    "dead_letters": """
        SELECT reason, count() AS n, max(received_at) AS last_received
        FROM dead_letters
        GROUP BY reason
        ORDER BY n DESC, reason""",
}
GLOBAL = ("experiments", "dead_letters")
PER_EXPERIMENT = tuple(name for name in QUERIES if name not in GLOBAL)
