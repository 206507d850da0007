-- Dashboard table (--reporting profile): the newest runs and their status, with how much each
-- run's lists moved against the run served before it (churn@10: 1 - Jaccard of each user's top
-- 10, over every user and over the users with no new rating; run_metrics segment stability).
SELECT r.run_id, r.status, r.started_at, round(r.recall_at_10, 4) AS recall_at_10, round(r.ndcg_at_10, 4) AS ndcg_at_10,
       round((SELECT value FROM run_metrics AS m
              WHERE m.run_id = r.run_id AND m.segment = 'stability' AND m.metric = 'churn_at_10'), 4) AS churn_at_10,
       round((SELECT value FROM run_metrics AS m
              WHERE m.run_id = r.run_id AND m.segment = 'stability' AND m.metric = 'churn_at_10_unchanged'), 4)
           AS churn_at_10_unchanged,
       round((SELECT value FROM run_metrics AS m
              WHERE m.run_id = r.run_id AND m.segment = 'stability' AND m.metric = 'rbo_at_10'), 4) AS rbo_at_10
FROM model_runs AS r
ORDER BY r.started_at DESC, r.run_id DESC
LIMIT 20
