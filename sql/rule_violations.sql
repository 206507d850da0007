-- Canned query rule_violations: the served lists checked against what they must leave out,
-- one row per check with how many rows (and users) break it; every count is expected to be 0.
-- - the served run's rules in force (model_runs.rules_json), as of the time each list was made
--   (refreshed_at, or the time the rules were applied to the nightly lists);
-- - a movie the user hid (hidden_movies) or already rated (the run's ratings and refreshes').
WITH run AS (
    SELECT p.run_id, coalesce(r.rules_json, '{}') AS rules
    FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id
),
lists AS (
    SELECT c.user_id, c.rank, c.movie_id, m.genres, m.year, run.rules, run.run_id,
           coalesce(CAST(strftime('%s', c.refreshed_at) AS INTEGER), json_extract(run.rules, '$.as_of')) AS made_at
    FROM run
    JOIN recommendations AS c ON c.run_id = run.run_id
    LEFT JOIN movies AS m ON m.movie_id = c.movie_id
),
broken (user_id, rank, movie_id, rule) AS (
    SELECT user_id, rank, movie_id, 'excluded movie' AS broken_rule FROM lists
    WHERE movie_id IN (SELECT value FROM json_each(lists.rules, '$.exclude_movies'))
    UNION ALL
    SELECT user_id, rank, movie_id, 'excluded genre' FROM lists, json_each(lists.rules, '$.exclude_genres') AS g
    WHERE instr('|' || lists.genres || '|', '|' || g.value || '|') > 0
    UNION ALL
    SELECT user_id, rank, movie_id, 'not one of only_genres' FROM lists
    WHERE json_array_length(lists.rules, '$.only_genres') > 0
      AND NOT EXISTS (SELECT 1 FROM json_each(lists.rules, '$.only_genres') AS g
                      WHERE instr('|' || lists.genres || '|', '|' || g.value || '|') > 0)
    UNION ALL
    SELECT user_id, rank, movie_id, 'year outside min_year..max_year' FROM lists
    WHERE (json_extract(rules, '$.min_year') IS NOT NULL AND (year IS NULL OR year < json_extract(rules, '$.min_year')))
       OR (json_extract(rules, '$.max_year') IS NOT NULL AND (year IS NULL OR year > json_extract(rules, '$.max_year')))
    UNION ALL
    SELECT user_id, rank, movie_id, 'not available when the list was made' FROM lists, json_each(lists.rules, '$.available') AS w
    WHERE lists.movie_id = json_extract(w.value, '$.movie_id')
      AND ((json_extract(w.value, '$.from') IS NOT NULL AND made_at < json_extract(w.value, '$.from'))
           OR (json_extract(w.value, '$.until') IS NOT NULL AND made_at >= json_extract(w.value, '$.until')))
    UNION ALL
    SELECT l.user_id, l.rank, l.movie_id, 'hidden by the user' FROM lists AS l
    JOIN hidden_movies AS h ON h.user_id = l.user_id AND h.movie_id = l.movie_id
    UNION ALL
    SELECT l.user_id, l.rank, l.movie_id, 'already rated' FROM lists AS l
    WHERE EXISTS (SELECT 1 FROM ratings AS r WHERE r.user_id = l.user_id AND r.movie_id = l.movie_id)
       OR EXISTS (SELECT 1 FROM refresh_ratings AS f
                  WHERE f.run_id = l.run_id AND f.user_id = l.user_id AND f.movie_id = l.movie_id)
),
checks (position, rule) AS (
    VALUES (1, 'excluded movie'), (2, 'excluded genre'), (3, 'not one of only_genres'),
           (4, 'year outside min_year..max_year'), (5, 'not available when the list was made'),
           (6, 'hidden by the user'), (7, 'already rated')
)
SELECT c.rule, count(b.user_id) AS n_rows, count(DISTINCT b.user_id) AS n_users, min(b.user_id) AS example_user_id
FROM checks AS c
LEFT JOIN broken AS b ON b.rule = c.rule
GROUP BY c.position, c.rule
ORDER BY c.position
