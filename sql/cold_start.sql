-- Canned query cold_start: recommendations for a new user who names movies they liked,
-- from the published run's similar-movies table: a candidate's score is the sum of its
-- similarity to each liked movie; liked movies, and those the rules in force block, are never
-- recommended.
-- :liked  comma-separated movie ids, e.g. '296,318,593' (1-100 ids)
-- :k      how many movies, 1-100 (empty: 10)
-- A malformed parameter gives one row whose `error` says what is wrong; liked movies the run
-- does not know add nothing (all unknown: no rows). `n_seeds` counts the liked movies a
-- candidate is similar to.
WITH args AS (
    SELECT
        CASE WHEN trim(:liked) != '' AND json_valid('[' || :liked || ']')
             THEN json('[' || :liked || ']') END AS liked_json,
        CASE WHEN :k = '' THEN 10
             WHEN :k GLOB '[0-9]*' AND NOT :k GLOB '*[^0-9]*' AND length(:k) <= 3
             AND length(CAST(:k AS BLOB)) = length(:k)
                  AND CAST(:k AS INTEGER) BETWEEN 1 AND 100 THEN CAST(:k AS INTEGER) END AS k
),
problem AS (
    SELECT CASE
        WHEN liked_json IS NULL
             OR json_array_length(liked_json) > 100
             OR EXISTS (SELECT 1 FROM json_each(liked_json) WHERE type != 'integer')
            THEN 'liked must be 1 to 100 comma-separated movie ids such as 296,318,593, got ' || quote(:liked)
        WHEN k IS NULL THEN 'k must be a whole number from 1 to 100, got ' || quote(:k)
    END AS error
    FROM args
),
seeds AS (
    SELECT DISTINCT j.value AS movie_id
    FROM args, json_each(args.liked_json) AS j
    WHERE (SELECT error FROM problem) IS NULL
),
candidates AS (
    SELECT s.run_id, s.similar_movie_id AS movie_id, sum(s.score) AS score, count(*) AS n_seeds
    FROM published_run AS p
    JOIN similar_movies AS s ON s.run_id = p.run_id
    JOIN seeds ON seeds.movie_id = s.movie_id
    WHERE s.similar_movie_id NOT IN (SELECT movie_id FROM seeds)
      AND s.similar_movie_id NOT IN (SELECT movie_id FROM current_blocked_movies)  -- the rules in force
    GROUP BY s.run_id, s.similar_movie_id
),
ranked AS (
    SELECT run_id, row_number() OVER (ORDER BY score DESC, movie_id) AS rank, movie_id, score, n_seeds
    FROM candidates
)
SELECT r.run_id, r.rank, r.movie_id, m.title, m.genres, m.year, r.score, r.n_seeds, NULL AS error
FROM ranked AS r
JOIN args
LEFT JOIN movies AS m ON m.movie_id = r.movie_id
WHERE r.rank <= args.k
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, error
FROM problem
WHERE error IS NOT NULL
ORDER BY rank
