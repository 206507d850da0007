-- Canned query recommendations_for_user: the published run's top movies for one user.
-- :user_id  a user id (whole number)
-- :k        how many movies, 1-100 (empty: 10)
-- One row per movie, best first; every row names the run it came from, and when a refresh
-- remade the list (refreshed_at; NULL for the nightly list), and why each movie is there: the
-- movie of the user's history that contributes most to its score (because_movie_id,
-- because_title). A malformed parameter gives one row whose `error` says what is wrong; an
-- unknown user gives no rows.
WITH args AS (
    SELECT
        CASE WHEN :user_id GLOB '[0-9]*' AND NOT :user_id GLOB '*[^0-9]*' AND length(:user_id) <= 18
             AND length(CAST(:user_id AS BLOB)) = length(:user_id)
             THEN CAST(:user_id AS INTEGER) END AS user_id,
        CASE WHEN :k = '' THEN 10
             WHEN :k GLOB '[0-9]*' AND NOT :k GLOB '*[^0-9]*' AND length(:k) <= 3
             AND length(CAST(:k AS BLOB)) = length(:k)
                  AND CAST(:k AS INTEGER) BETWEEN 1 AND 100 THEN CAST(:k AS INTEGER) END AS k
),
problem AS (
    SELECT CASE
        WHEN user_id IS NULL THEN 'user_id must be a whole number, got ' || quote(:user_id)
        WHEN k IS NULL THEN 'k must be a whole number from 1 to 100, got ' || quote(:k)
    END AS error
    FROM args
)
SELECT r.run_id, r.user_id, r.rank, r.movie_id, m.title, m.genres, m.year, r.score, r.refreshed_at,
       r.because_movie_id, b.title AS because_title, NULL AS error
FROM args
JOIN published_run AS p
JOIN recommendations AS r ON r.run_id = p.run_id AND r.user_id = args.user_id AND r.rank <= args.k
LEFT JOIN movies AS m ON m.movie_id = r.movie_id
LEFT JOIN movies AS b ON b.movie_id = r.because_movie_id
WHERE (SELECT error FROM problem) IS NULL
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, error
FROM problem
WHERE error IS NOT NULL
ORDER BY rank
