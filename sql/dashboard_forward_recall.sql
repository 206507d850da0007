-- Dashboard chart data (datasette-dashboards, --reporting profile): the forward metric of each
-- run, i.e. the Recall@10 the run readers were being served reached on the ratings that arrived
-- after its data (segment forward:<that run>), beside what popularity would have reached.
SELECT r.run_id, r.started_at,
       CASE m.metric
           WHEN 'forward_recall_at_10' THEN 'served run'
           WHEN 'forward_popularity_recall_at_10' THEN 'popularity'
           WHEN 'forward_recent_popularity_recall_at_10' THEN 'recent popularity'
       END AS metric,
       m.value, substr(m.segment, 9) AS served_run
FROM run_metrics AS m
JOIN model_runs AS r ON r.run_id = m.run_id
WHERE m.segment LIKE 'forward:%'
  AND m.metric IN ('forward_recall_at_10', 'forward_popularity_recall_at_10', 'forward_recent_popularity_recall_at_10')
ORDER BY r.started_at, r.run_id, metric
