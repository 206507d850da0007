-- Canned query model_info: the health check. Always one row: the published run, when it
-- was published, its overall metrics (segment 'all' of run_metrics), and how many users and
-- movies it serves; with no published run, `error` says so.
SELECT
    p.run_id,
    p.published_at,
    r.started_at,
    r.recall_at_10,
    r.ndcg_at_10,
    r.popularity_recall_at_10,
    r.popularity_ndcg_at_10,
    (SELECT json_group_object(metric, value)
     FROM run_metrics WHERE run_id = p.run_id AND segment = 'all') AS metrics_json,
    r.n_users,
    r.n_items AS n_movies,
    (SELECT count(*) FROM movies) AS n_catalog_movies,
    r.params_json,
    CASE WHEN p.run_id IS NULL THEN 'no published run yet; run `recjobs run`' END AS error
FROM (SELECT 1) AS one
LEFT JOIN published_run AS p
LEFT JOIN model_runs AS r ON r.run_id = p.run_id
