-- Canned query similar_movies: the movies most similar to one movie in the published run.
-- :movie_id  a movie id (whole number)
-- :k         how many movies, 1-100 (empty: 10; the run stores n_similar per movie)
-- A malformed parameter gives one row whose `error` says what is wrong; an unknown movie gives no rows.
WITH args AS (
    SELECT
        CASE WHEN :movie_id GLOB '[0-9]*' AND NOT :movie_id GLOB '*[^0-9]*' AND length(:movie_id) <= 18
             AND length(CAST(:movie_id AS BLOB)) = length(:movie_id)
             THEN CAST(:movie_id AS INTEGER) END AS movie_id,
        CASE WHEN :k = '' THEN 10
             WHEN :k GLOB '[0-9]*' AND NOT :k GLOB '*[^0-9]*' AND length(:k) <= 3
             AND length(CAST(:k AS BLOB)) = length(:k)
                  AND CAST(:k AS INTEGER) BETWEEN 1 AND 100 THEN CAST(:k AS INTEGER) END AS k
),
problem AS (
    SELECT CASE
        WHEN movie_id IS NULL THEN 'movie_id must be a whole number, got ' || quote(:movie_id)
        WHEN k IS NULL THEN 'k must be a whole number from 1 to 100, got ' || quote(:k)
    END AS error
    FROM args
)
SELECT s.run_id, s.movie_id, s.rank, s.similar_movie_id, m.title, m.genres, m.year, s.score, NULL AS error
FROM args
JOIN published_run AS p
JOIN similar_movies AS s ON s.run_id = p.run_id AND s.movie_id = args.movie_id AND s.rank <= args.k
LEFT JOIN movies AS m ON m.movie_id = s.similar_movie_id
WHERE (SELECT error FROM problem) IS NULL
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, error
FROM problem
WHERE error IS NOT NULL
ORDER BY rank
