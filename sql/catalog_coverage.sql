-- Report catalog_coverage: how much of the catalog the published run recommends to anyone.
WITH recommended AS (
    SELECT DISTINCT r.movie_id
    FROM published_run AS p JOIN recommendations AS r ON r.run_id = p.run_id
),
rated AS (
    SELECT DISTINCT movie_id FROM ratings
)
SELECT
    (SELECT run_id FROM published_run) AS run_id,
    (SELECT count(*) FROM movies) AS n_catalog_movies,
    (SELECT count(*) FROM rated) AS n_rated_movies,
    (SELECT count(*) FROM recommended) AS n_recommended_movies,
    round(1.0 * (SELECT count(*) FROM recommended) / max((SELECT count(*) FROM movies), 1), 4)
        AS coverage_of_catalog,
    round(1.0 * (SELECT count(*) FROM recommended) / max((SELECT count(*) FROM rated), 1), 4)
        AS coverage_of_rated
