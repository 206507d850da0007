-- Everything that writes what readers see (recjobs/storage/publish.py): a run's rows, the catalog
-- published with it, the quality gate's inputs, the pointer flip, rollback and pruning.
-- Bulk inserts use ? placeholders.

-- name: delete_run_recommendations
DELETE FROM recommendations WHERE run_id = ?;

-- name: delete_run_similar_movies
DELETE FROM similar_movies WHERE run_id = ?;

-- name: insert_recommendation
INSERT INTO recommendations (run_id, user_id, rank, movie_id, score, because_movie_id) VALUES (?, ?, ?, ?, ?, ?);

-- name: insert_similar_movie
INSERT INTO similar_movies (run_id, movie_id, rank, similar_movie_id, score) VALUES (?, ?, ?, ?, ?);

-- name: current
SELECT r.* FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id;

-- name: current_with_counts
SELECT r.*, p.published_at AS served_since,
       (SELECT count(*) FROM recommendations AS c WHERE c.run_id = r.run_id) AS n_recommendations,
       (SELECT count(*) FROM refreshes AS f WHERE f.run_id = r.run_id) AS n_refreshes,
       (SELECT max(refreshed_at) FROM refreshes AS f WHERE f.run_id = r.run_id) AS last_refreshed_at,
       (SELECT count(DISTINCT user_id) FROM recommendations AS c
        WHERE c.run_id = r.run_id AND c.refreshed_at IS NOT NULL) AS n_refreshed_users
FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id;

-- name: current_id
SELECT run_id FROM published_run;

-- name: point_to
INSERT INTO published_run (id, run_id, published_at) VALUES (1, :run_id, :now)
ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, published_at = excluded.published_at;

-- name: mark_published
UPDATE model_runs SET status = 'published', status_reason = NULL, published_at = :now, finished_at = :now,
    rows_deleted_at = NULL
WHERE run_id = :run_id;

-- name: rollback_target
-- The newest published run other than the current one whose rows are still kept.
SELECT run_id FROM model_runs
WHERE status = 'published' AND rows_deleted_at IS NULL
  AND run_id != coalesce((SELECT run_id FROM published_run), '')
ORDER BY published_at DESC, run_id DESC
LIMIT 1;

-- name: runs_to_prune
-- Runs whose rows go: published runs beyond the newest few kept (never the current one),
-- and rejected or failed runs. Running runs are left alone.
SELECT run_id FROM model_runs
WHERE rows_deleted_at IS NULL
  AND run_id != coalesce((SELECT run_id FROM published_run), '')
  AND (status IN ('rejected', 'failed')
       OR (status = 'published' AND run_id NOT IN (
             SELECT run_id FROM model_runs WHERE status = 'published'
             ORDER BY published_at DESC, run_id DESC LIMIT :keep)));

-- name: mark_rows_deleted
UPDATE model_runs SET rows_deleted_at = :now WHERE run_id = :run_id;

-- name: delete_tags
DELETE FROM tags;

-- name: delete_ratings
DELETE FROM ratings;

-- name: delete_movies
DELETE FROM movies;

-- name: insert_movie
INSERT INTO movies (movie_id, title, genres, year, imdb_id, tmdb_id) VALUES (?, ?, ?, ?, ?, ?);

-- name: delete_rating
DELETE FROM ratings WHERE user_id = ? AND movie_id = ?;

-- name: catalog_source
-- The run the ratings table was last written from, and where its files are.
SELECT c.run_id, r.artifacts_dir FROM catalog_source AS c JOIN model_runs AS r USING (run_id);

-- name: count_ratings
SELECT count(*) FROM ratings;

-- name: set_catalog_source
INSERT INTO catalog_source (id, run_id) VALUES (1, :run_id)
ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id;

-- name: insert_rating
INSERT INTO ratings (user_id, movie_id, rating, rated_at) VALUES (?, ?, ?, ?);

-- name: insert_tag
INSERT INTO tags (user_id, movie_id, tag, tagged_at) VALUES (?, ?, ?, ?);

-- name: temporal_figures
-- A run's figures on the full night's temporal windows (recjobs.evaluation.blend_choice).
SELECT metric, value FROM run_metrics WHERE run_id = :run_id AND segment = 'temporal';

-- name: served_top_lists
-- The published run's top 10 per user, best first (stability of the next run's lists).
SELECT user_id, movie_id FROM recommendations WHERE run_id = :run_id AND rank <= 10 ORDER BY user_id, rank;

-- name: refreshed_users
SELECT DISTINCT user_id FROM recommendations WHERE run_id = :run_id AND refreshed_at IS NOT NULL;
