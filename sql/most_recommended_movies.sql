-- Report most_recommended_movies: the 100 movies the published run recommends to the most
-- users, with the share of users and the mean rank they get.
WITH current AS (
    SELECT r.movie_id, r.rank
    FROM published_run AS p JOIN recommendations AS r ON r.run_id = p.run_id
),
users AS (
    SELECT count(DISTINCT r.user_id) AS n
    FROM published_run AS p JOIN recommendations AS r ON r.run_id = p.run_id
)
SELECT c.movie_id, m.title, m.genres, m.year,
       count(*) AS n_users,
       round(1.0 * count(*) / (SELECT n FROM users), 4) AS share_of_users,
       round(avg(c.rank), 2) AS mean_rank
FROM current AS c
LEFT JOIN movies AS m ON m.movie_id = c.movie_id
GROUP BY c.movie_id
ORDER BY n_users DESC, c.movie_id
LIMIT 100
