-- The run record (model_runs), written by every job (recjobs/storage/runs.py).

-- name: start
INSERT INTO model_runs (run_id, started_at, status, params_json, data_sha256, artifacts_dir)
VALUES (:run_id, :now, 'running', :params_json, :data_sha256, :artifacts_dir)
ON CONFLICT (run_id) DO UPDATE SET
    params_json   = excluded.params_json,
    data_sha256   = excluded.data_sha256,
    artifacts_dir = excluded.artifacts_dir,
    -- re-running a run that readers are served keeps it served
    status        = CASE WHEN model_runs.status = 'published' THEN 'published' ELSE 'running' END,
    status_reason = NULL;

-- name: get
SELECT * FROM model_runs WHERE run_id = :run_id;

-- name: set_load_counts
UPDATE model_runs SET n_ratings = :n_ratings, n_dropped_ratings = :n_dropped_ratings WHERE run_id = :run_id;

-- name: set_split_counts
UPDATE model_runs SET n_train = :n_train, n_test_users = :n_test_users WHERE run_id = :run_id;

-- name: set_model_counts
UPDATE model_runs SET n_users = :n_users, n_items = :n_items WHERE run_id = :run_id;

-- name: set_metrics
UPDATE model_runs SET recall_at_10 = :recall_at_10, ndcg_at_10 = :ndcg_at_10,
    popularity_recall_at_10 = :popularity_recall_at_10, popularity_ndcg_at_10 = :popularity_ndcg_at_10
WHERE run_id = :run_id;

-- name: upsert_metric
INSERT INTO run_metrics (run_id, metric, segment, value) VALUES (:run_id, :metric, :segment, :value)
ON CONFLICT (run_id, metric, segment) DO UPDATE SET value = excluded.value;

-- name: record_seconds
UPDATE model_runs SET step_seconds_json = json_set(step_seconds_json, '$.' || :step, :seconds)
WHERE run_id = :run_id;

-- name: finish
UPDATE model_runs SET status = :status, status_reason = :reason, finished_at = :now
-- a run readers are served stays published, whatever a re-run of one of its steps does
WHERE run_id = :run_id AND NOT (status = 'published' AND :status IN ('failed', 'rejected'));

-- name: latest_id
SELECT run_id FROM model_runs ORDER BY started_at DESC, run_id DESC LIMIT 1;

-- name: abandoned
-- Runs still 'running' that started before the given time; the caller holds the run lock, so no process is on them.
SELECT run_id, artifacts_dir FROM model_runs
WHERE status = 'running' AND run_id != :run_id AND started_at < :before;

-- name: warm_start_source
-- The published run a night's ALS fits start from (and whose blend a usual night keeps): the
-- newest one recorded before this run, so a re-run of the night starts from the same one.
SELECT run_id, artifacts_dir, params_json FROM model_runs
WHERE status = 'published' AND artifacts_dir IS NOT NULL
  AND rowid < (SELECT rowid FROM model_runs WHERE run_id = :run_id)
ORDER BY rowid DESC
LIMIT 1;

-- name: published_before
-- Whether any run was published before this one: a night with none before it is a first night.
SELECT EXISTS (
    SELECT 1 FROM model_runs
    WHERE status = 'published' AND rowid < (SELECT rowid FROM model_runs WHERE run_id = :run_id)
);

-- name: last_full_night
-- The newest evaluated run before this one that was a full night (split records
-- full_evaluation = 1), with the evaluated nights after it and before this run: the cadence.
SELECT r.run_id, r.params_json,
       (SELECT count(*) FROM model_runs later
        WHERE later.rowid > r.rowid
          AND later.rowid < (SELECT rowid FROM model_runs WHERE run_id = :run_id)
          AND later.status IN ('published', 'rejected')) AS nights_since
FROM model_runs AS r
JOIN run_metrics AS m
  ON m.run_id = r.run_id AND m.metric = 'full_evaluation' AND m.segment = 'all' AND m.value = 1
WHERE r.status IN ('published', 'rejected')
  AND r.rowid < (SELECT rowid FROM model_runs WHERE run_id = :run_id)
ORDER BY r.rowid DESC
LIMIT 1;

-- name: record_owner
INSERT INTO run_owners (run_id, pid, host, process_started) VALUES (:run_id, :pid, :host, :process_started)
ON CONFLICT (run_id) DO UPDATE SET
    pid = excluded.pid, host = excluded.host, process_started = excluded.process_started;

-- name: owned_running
-- Runs still 'running' whose executing process is recorded on this host.
SELECT o.run_id, o.pid, o.process_started, r.artifacts_dir
FROM run_owners AS o JOIN model_runs AS r ON r.run_id = o.run_id
WHERE r.status = 'running' AND o.host = :host AND o.run_id != :run_id;

-- name: fail_if_running
-- A run its executor gave up on (the DAG run failed): failed, unless a step already ended it.
UPDATE model_runs SET status = 'failed', status_reason = :reason, finished_at = :now
WHERE run_id = :run_id AND status = 'running';

-- name: set_blend
-- The blend weights the run's train step chose or kept, and the protocol its gate uses.
UPDATE model_runs
SET params_json = json_set(params_json, '$.blend', json(:blend_json)), gate_protocol = :gate_protocol
WHERE run_id = :run_id;
