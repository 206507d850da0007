-- The on-demand cold-start job (recjobs/jobs/cold_start.py): the served run, titles, and the
-- stored request with its answer.

-- name: served_run
SELECT p.run_id, r.artifacts_dir, r.rules_json
FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id;

-- name: movies
SELECT movie_id, title, genres, year FROM movies WHERE movie_id IN (SELECT value FROM json_each(:ids));

-- name: insert_request
INSERT INTO cold_start_requests (requested_at, run_id, liked_json, unknown_json, k, method, answer_seconds)
VALUES (:requested_at, :run_id, :liked_json, :unknown_json, :k, :method, :answer_seconds)
RETURNING request_id;

-- name: insert_recommendation
INSERT INTO cold_start_recommendations (request_id, rank, movie_id, score, because_movie_id) VALUES (?, ?, ?, ?, ?);

-- name: catalogue
-- Every movie's genres and year: what the rules in force are checked against.
SELECT movie_id, genres, year FROM movies ORDER BY movie_id;

-- name: hidden
SELECT movie_id FROM hidden_movies WHERE user_id = :user_id;
