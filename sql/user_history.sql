-- Canned query user_history: what one user rated, newest first.
-- :user_id  a user id (whole number)
-- A malformed user_id gives one row whose `error` says what is wrong; an unknown user gives no rows.
WITH args AS (
    SELECT CASE WHEN :user_id GLOB '[0-9]*' AND NOT :user_id GLOB '*[^0-9]*' AND length(:user_id) <= 18
             AND length(CAST(:user_id AS BLOB)) = length(:user_id)
                THEN CAST(:user_id AS INTEGER) END AS user_id
),
answer AS (
    SELECT r.user_id, r.movie_id, m.title, m.genres, m.year, r.rating, r.rated_at,
           strftime('%Y-%m-%dT%H:%M:%SZ', r.rated_at, 'unixepoch') AS rated_at_utc, NULL AS error
    FROM args
    JOIN ratings AS r ON r.user_id = args.user_id
    LEFT JOIN movies AS m ON m.movie_id = r.movie_id
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           'user_id must be a whole number, got ' || quote(:user_id)
    FROM args
    WHERE user_id IS NULL
)
SELECT * FROM answer
ORDER BY rated_at DESC, movie_id
