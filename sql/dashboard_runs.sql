-- Dashboard table (--reporting profile): the newest runs and their status.
SELECT run_id, status, started_at, round(recall_at_10, 4) AS recall_at_10, round(ndcg_at_10, 4) AS ndcg_at_10
FROM model_runs
ORDER BY started_at DESC, run_id DESC
LIMIT 20
