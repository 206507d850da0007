-- Refreshes between nights (recjobs/jobs/refresh.py) and what lists leave out: hidden movies
-- and the rules in force. Bulk inserts use ? placeholders.

-- name: all_hidden
SELECT user_id, movie_id FROM hidden_movies;

-- name: insert_hidden
INSERT OR IGNORE INTO hidden_movies (user_id, movie_id, hidden_at) VALUES (?, ?, ?);

-- name: set_rules
UPDATE model_runs SET rules_json = :rules_json WHERE run_id = :run_id;

-- name: served_run
SELECT p.run_id, r.artifacts_dir, r.rules_json
FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id;

-- name: movies
SELECT movie_id, genres, year FROM movies ORDER BY movie_id;

-- name: known_files
SELECT path, size, mtime_ns, run_id FROM refresh_files;

-- name: record_file
INSERT INTO refresh_files (path, size, mtime_ns, run_id) VALUES (?, ?, ?, ?)
ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, run_id = excluded.run_id;

-- name: served_ratings_of
-- The ratings the served run was made from, of the users given (a JSON array).
SELECT user_id, movie_id, rating, rated_at FROM ratings
WHERE user_id IN (SELECT value FROM json_each(:user_ids));

-- name: refreshed_ratings_of
-- Ratings earlier refreshes folded into the run's lists, of the users given.
SELECT user_id, movie_id, rating, rated_at FROM refresh_ratings
WHERE run_id = :run_id AND user_id IN (SELECT value FROM json_each(:user_ids));

-- name: hidden_of
SELECT user_id, movie_id, hidden_at FROM hidden_movies WHERE user_id IN (SELECT value FROM json_each(:user_ids));

-- name: insert_refresh_rating
INSERT INTO refresh_ratings (run_id, user_id, movie_id, rating, rated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id, user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at;

-- name: forget_older_runs
-- Refresh ratings of runs no longer served: the served run's load read incoming/ itself.
DELETE FROM refresh_ratings WHERE run_id != :run_id;

-- name: delete_user_recommendations
DELETE FROM recommendations WHERE run_id = ? AND user_id = ?;

-- name: insert_recommendation
INSERT INTO recommendations (run_id, user_id, rank, movie_id, score, because_movie_id, refreshed_at)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: users_holding
-- Users of the run whose list holds any of the movies given (a JSON array).
SELECT DISTINCT user_id FROM recommendations
WHERE run_id = :run_id AND movie_id IN (SELECT value FROM json_each(:movie_ids));

-- name: insert_refresh
INSERT INTO refreshes (run_id, refreshed_at, n_ratings, n_hidden, n_users, n_new_users, n_rule_users, seconds)
VALUES (:run_id, :refreshed_at, :n_ratings, :n_hidden, :n_users, :n_new_users, :n_rule_users, :seconds)
RETURNING refresh_id;
