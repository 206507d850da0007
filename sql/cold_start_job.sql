-- The on-demand cold-start job (recjobs/cold_start.py): the served run, titles, and the
-- stored request with its answer.

-- name: served_run
SELECT p.run_id, r.artifacts_dir
FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id;

-- name: titles
SELECT movie_id, title FROM movies WHERE movie_id IN (SELECT value FROM json_each(:ids));

-- name: insert_request
INSERT INTO cold_start_requests (requested_at, run_id, liked_json, unknown_json, k, method, answer_seconds)
VALUES (:requested_at, :run_id, :liked_json, :unknown_json, :k, :method, :answer_seconds)
RETURNING request_id;

-- name: insert_recommendation
INSERT INTO cold_start_recommendations (request_id, rank, movie_id, score) VALUES (?, ?, ?, ?);

-- name: similar_to_liked
-- The SQL item-similarity path for a new user, used by the offline evaluation when
-- sql/cold_start.sql (the datasette canned query) is absent: the published run's
-- similar_movies scores summed over the liked movies, the liked movies left out.
WITH liked AS (SELECT DISTINCT CAST(value AS INTEGER) AS movie_id FROM json_each('[' || :liked || ']'))
SELECT s.similar_movie_id, sum(s.score) AS score
FROM current_similar_movies AS s
WHERE s.movie_id IN (SELECT movie_id FROM liked)
  AND s.similar_movie_id NOT IN (SELECT movie_id FROM liked)
GROUP BY s.similar_movie_id
ORDER BY score DESC, s.similar_movie_id
LIMIT :k;
