-- Columns added to tables after their first release: applied once to a database made before
-- them (recjobs/storage/db.py checks each column, then runs its section).

-- name: model_runs_gate_protocol
ALTER TABLE model_runs ADD COLUMN gate_protocol TEXT;

-- name: model_runs_rules_json
ALTER TABLE model_runs ADD COLUMN rules_json TEXT;

-- name: recommendations_refreshed_at
ALTER TABLE recommendations ADD COLUMN refreshed_at TEXT;
DROP VIEW IF EXISTS current_recommendations;
CREATE VIEW current_recommendations AS
SELECT r.user_id, r.rank, r.movie_id, m.title, r.score, r.refreshed_at
FROM published_run AS p
JOIN recommendations AS r ON r.run_id = p.run_id
LEFT JOIN movies AS m ON m.movie_id = r.movie_id;

-- name: recommendations_because_movie_id
ALTER TABLE recommendations ADD COLUMN because_movie_id INTEGER;
DROP VIEW IF EXISTS current_recommendations;
CREATE VIEW current_recommendations AS
SELECT r.user_id, r.rank, r.movie_id, m.title, r.score, r.refreshed_at, r.because_movie_id, b.title AS because_title
FROM published_run AS p
JOIN recommendations AS r ON r.run_id = p.run_id
LEFT JOIN movies AS m ON m.movie_id = r.movie_id
LEFT JOIN movies AS b ON b.movie_id = r.because_movie_id;

-- name: cold_start_recommendations_because_movie_id
ALTER TABLE cold_start_recommendations ADD COLUMN because_movie_id INTEGER;
