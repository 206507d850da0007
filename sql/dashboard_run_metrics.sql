-- Dashboard chart data (datasette-dashboards, --reporting profile): one row per run and
-- metric, long format for vega-lite. Runs that were never evaluated are left out.
SELECT r.run_id, r.started_at, r.status, m.metric, m.value
FROM model_runs AS r
JOIN (
    SELECT run_id, 'ALS Recall@10' AS metric, recall_at_10 AS value FROM model_runs
    UNION ALL SELECT run_id, 'ALS NDCG@10', ndcg_at_10 FROM model_runs
    UNION ALL SELECT run_id, 'popularity Recall@10', popularity_recall_at_10 FROM model_runs
    UNION ALL SELECT run_id, 'popularity NDCG@10', popularity_ndcg_at_10 FROM model_runs
) AS m ON m.run_id = r.run_id
WHERE m.value IS NOT NULL
ORDER BY r.started_at, r.run_id, m.metric
