-- Report users_by_history_length: how many users have how many ratings, in buckets.
WITH lengths AS (
    SELECT user_id, count(*) AS n_ratings FROM ratings GROUP BY user_id
)
SELECT
    CASE WHEN n_ratings < 20 THEN '1-19'
         WHEN n_ratings < 50 THEN '20-49'
         WHEN n_ratings < 100 THEN '50-99'
         WHEN n_ratings < 200 THEN '100-199'
         WHEN n_ratings < 500 THEN '200-499'
         WHEN n_ratings < 1000 THEN '500-999'
         ELSE '1000+' END AS history_length,
    min(n_ratings) AS min_ratings,
    max(n_ratings) AS max_ratings,
    count(*) AS n_users
FROM lengths
GROUP BY history_length
ORDER BY min_ratings
