-- Report genre_mix: each genre's share of the published run's recommendations against its
-- share of all ratings (a movie with n genres counts once for each).
WITH genres AS (
    SELECT m.movie_id, g.value AS genre
    FROM movies AS m, json_each('["' || replace(m.genres, '|', '","') || '"]') AS g
),
recommended AS (
    SELECT r.movie_id, count(*) AS n
    FROM published_run AS p JOIN recommendations AS r ON r.run_id = p.run_id
    GROUP BY r.movie_id
),
rated AS (
    SELECT movie_id, count(*) AS n FROM ratings GROUP BY movie_id
),
per_genre AS (
    SELECT g.genre,
           coalesce(sum(rec.n), 0) AS n_recommendations,
           coalesce(sum(rat.n), 0) AS n_ratings
    FROM genres AS g
    LEFT JOIN recommended AS rec ON rec.movie_id = g.movie_id
    LEFT JOIN rated AS rat ON rat.movie_id = g.movie_id
    GROUP BY g.genre
)
SELECT genre, n_recommendations, n_ratings,
       round(1.0 * n_recommendations / max((SELECT sum(n_recommendations) FROM per_genre), 1), 4)
           AS share_of_recommendations,
       round(1.0 * n_ratings / max((SELECT sum(n_ratings) FROM per_genre), 1), 4) AS share_of_ratings
FROM per_genre
ORDER BY n_recommendations DESC, genre
