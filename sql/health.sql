-- The health route (/-/health) and the ETag of run-keyed answers: the published run, when it
-- was published, how many users it serves, and its latest refresh (lists remade since).
-- No row when nothing is published.
SELECT p.run_id, p.published_at, r.n_users,
       (SELECT max(refresh_id) FROM refreshes AS f WHERE f.run_id = p.run_id) AS last_refresh_id,
       (SELECT max(refreshed_at) FROM refreshes AS f WHERE f.run_id = p.run_id) AS last_refreshed_at
FROM published_run AS p
LEFT JOIN model_runs AS r ON r.run_id = p.run_id
