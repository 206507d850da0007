-- Report run_metrics_history: every run's metrics over time, oldest first, with its status
-- and whether it is the run readers are served.
SELECT
    r.run_id,
    r.started_at,
    r.published_at,
    r.status,
    r.status_reason,
    r.run_id = (SELECT run_id FROM published_run) AS is_current,
    r.recall_at_10,
    r.ndcg_at_10,
    r.popularity_recall_at_10,
    r.popularity_ndcg_at_10,
    r.n_users,
    r.n_items AS n_movies,
    r.n_ratings
FROM model_runs AS r
ORDER BY r.started_at, r.run_id
