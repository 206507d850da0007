-- Columns added to tables after their first release: applied once to a database made before
-- them (recjobs/storage/db.py checks each column, then runs its section).

-- name: model_runs_gate_protocol
ALTER TABLE model_runs ADD COLUMN gate_protocol TEXT;
