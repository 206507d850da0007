-- The forward metric of a nightly run (recjobs/evaluation/freshness.py): how the run readers were
-- served did on the ratings that arrived after its data.

-- name: served_run
SELECT p.run_id, m.value AS data_until
FROM published_run AS p
LEFT JOIN run_metrics AS m ON m.run_id = p.run_id AND m.metric = 'data_until' AND m.segment = 'all';

-- name: top_lists
SELECT user_id, movie_id FROM recommendations WHERE run_id = :run_id AND rank <= :cutoff ORDER BY user_id, rank;
