-- The health route (/-/health) and the ETag of run-keyed answers: the published run, when it
-- was published, and how many users it serves. No row when nothing is published.
SELECT p.run_id, p.published_at, r.n_users
FROM published_run AS p
LEFT JOIN model_runs AS r ON r.run_id = p.run_id
