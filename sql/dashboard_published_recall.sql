-- Dashboard metric card (--reporting profile): Recall@10 of the published run.
SELECT printf('%.4f', r.recall_at_10) AS recall_at_10
FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id
