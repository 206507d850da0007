-- The public contract of the recommendations database. datasette clients and SQL
-- reports depend on these names; add columns, never rename them.

CREATE TABLE IF NOT EXISTS movies (
    movie_id INTEGER PRIMARY KEY,
    title    TEXT NOT NULL,
    genres   TEXT NOT NULL,
    year     INTEGER,            -- parsed from the title, NULL when it has none
    imdb_id  TEXT,               -- as in links.csv, e.g. '0114709'
    tmdb_id  INTEGER
);

CREATE TABLE IF NOT EXISTS ratings (
    user_id  INTEGER NOT NULL,
    movie_id INTEGER NOT NULL,
    rating   REAL    NOT NULL,
    rated_at INTEGER NOT NULL,   -- seconds since 1970-01-01 UTC
    PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ratings_by_movie ON ratings (movie_id);

CREATE TABLE IF NOT EXISTS tags (
    user_id   INTEGER NOT NULL,
    movie_id  INTEGER NOT NULL,
    tag       TEXT    NOT NULL,
    tagged_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS model_runs (
    run_id                  TEXT PRIMARY KEY,
    started_at              TEXT NOT NULL,
    finished_at             TEXT,
    published_at            TEXT,
    status                  TEXT NOT NULL DEFAULT 'running'
                            CHECK (status IN ('running', 'published', 'rejected', 'failed')),
    status_reason           TEXT,
    params_json             TEXT NOT NULL,
    data_sha256             TEXT,
    artifacts_dir           TEXT,
    n_ratings               INTEGER,
    n_dropped_ratings       INTEGER,
    n_users                 INTEGER,
    n_items                 INTEGER,
    n_train                 INTEGER,
    n_test_users            INTEGER,
    recall_at_10            REAL,
    ndcg_at_10              REAL,
    popularity_recall_at_10 REAL,
    popularity_ndcg_at_10   REAL,
    rows_deleted_at         TEXT,   -- set when pruning removed this run's recommendations
    step_seconds_json       TEXT NOT NULL DEFAULT '{}',
    gate_protocol           TEXT,   -- 'temporal' or 'leave-last-out': the figures the quality gate used
    rules_json              TEXT    -- the business rules in force for the run's lists (recjobs/method/rules.py)
);

-- Long-format metrics: one row per (run, metric, segment).
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id  TEXT NOT NULL REFERENCES model_runs (run_id),
    metric  TEXT NOT NULL,
    segment TEXT NOT NULL DEFAULT 'all',
    value   REAL,
    PRIMARY KEY (run_id, metric, segment)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS recommendations (
    run_id   TEXT    NOT NULL REFERENCES model_runs (run_id),
    user_id  INTEGER NOT NULL,
    rank     INTEGER NOT NULL CHECK (rank >= 1),
    movie_id INTEGER NOT NULL,
    score    REAL    NOT NULL,
    refreshed_at TEXT,           -- when a refresh remade this user's list; NULL: the nightly list
    because_movie_id INTEGER,    -- the history movie contributing most to its score (recjobs/method/reasons.py)
    PRIMARY KEY (run_id, user_id, rank),
    UNIQUE (run_id, user_id, movie_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS similar_movies (
    run_id           TEXT    NOT NULL REFERENCES model_runs (run_id),
    movie_id         INTEGER NOT NULL,
    rank             INTEGER NOT NULL CHECK (rank >= 1),
    similar_movie_id INTEGER NOT NULL,
    score            REAL    NOT NULL,
    PRIMARY KEY (run_id, movie_id, rank),
    UNIQUE (run_id, movie_id, similar_movie_id)
) WITHOUT ROWID;

-- The one-row pointer to the run readers are served.
CREATE TABLE IF NOT EXISTS published_run (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    run_id       TEXT NOT NULL REFERENCES model_runs (run_id),
    published_at TEXT NOT NULL
);

-- The run whose loaded ratings the ratings table holds (its artifacts' ratings.npz): the next
-- publish writes only what changed since. Internal to the publish step.
CREATE TABLE IF NOT EXISTS catalog_source (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    run_id TEXT NOT NULL REFERENCES model_runs (run_id)
);

-- The process that executes a run from start to end (`recjobs run`): when it is gone while the
-- run is still 'running', the next command marks the run failed at once. Runs of the DAG have
-- no row here (their tasks are separate processes): the failure callback or the age rule ends them.
CREATE TABLE IF NOT EXISTS run_owners (
    run_id          TEXT PRIMARY KEY REFERENCES model_runs (run_id),
    pid             INTEGER NOT NULL,
    host            TEXT NOT NULL,
    process_started TEXT NOT NULL   -- boot id and start time of the process: a reused pid is another process
);

CREATE VIEW IF NOT EXISTS current_recommendations AS
SELECT r.user_id, r.rank, r.movie_id, m.title, r.score, r.refreshed_at, r.because_movie_id, b.title AS because_title
FROM published_run AS p
JOIN recommendations AS r ON r.run_id = p.run_id
LEFT JOIN movies AS m ON m.movie_id = r.movie_id
LEFT JOIN movies AS b ON b.movie_id = r.because_movie_id;

CREATE VIEW IF NOT EXISTS current_similar_movies AS
SELECT s.movie_id, s.rank, s.similar_movie_id, m.title, s.score
FROM published_run AS p
JOIN similar_movies AS s ON s.run_id = p.run_id
LEFT JOIN movies AS m ON m.movie_id = s.similar_movie_id;

-- Cold start: a new user's request and the answer, with the run that answered.
CREATE TABLE IF NOT EXISTS cold_start_requests (
    request_id   INTEGER PRIMARY KEY,
    requested_at TEXT NOT NULL,
    run_id       TEXT NOT NULL REFERENCES model_runs (run_id),
    liked_json   TEXT NOT NULL,   -- the ids as given, duplicates collapsed
    unknown_json TEXT NOT NULL,   -- liked ids the model does not know
    k            INTEGER NOT NULL,
    method       TEXT NOT NULL,   -- 'als_fold_in', 'blend' or 'popularity'
    answer_seconds REAL           -- time to compute the answer (storing it not included)
);

CREATE TABLE IF NOT EXISTS cold_start_recommendations (
    request_id INTEGER NOT NULL REFERENCES cold_start_requests (request_id),
    rank       INTEGER NOT NULL,
    movie_id   INTEGER NOT NULL,
    score      REAL    NOT NULL,
    because_movie_id INTEGER,   -- the liked movie contributing most (recjobs/method/reasons.py)
    PRIMARY KEY (request_id, rank)
) WITHOUT ROWID;

-- "Not interested": movies a user hid (incoming/hidden*.csv). Never in that user's lists again.
CREATE TABLE IF NOT EXISTS hidden_movies (
    user_id   INTEGER NOT NULL,
    movie_id  INTEGER NOT NULL,
    hidden_at INTEGER NOT NULL,   -- seconds since 1970-01-01 UTC, as in the file
    PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;

-- Refreshes between nights (recjobs/jobs/refresh.py): one row per refresh that wrote lists.
CREATE TABLE IF NOT EXISTS refreshes (
    refresh_id     INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES model_runs (run_id),
    refreshed_at   TEXT NOT NULL,
    n_ratings      INTEGER NOT NULL,   -- new ratings folded in
    n_hidden       INTEGER NOT NULL,   -- new hidden movies
    n_users        INTEGER NOT NULL,   -- known users whose lists were remade
    n_new_users    INTEGER NOT NULL,   -- new users given the cold-start answer
    n_rule_users   INTEGER NOT NULL,   -- users remade because the rules in force changed
    seconds        REAL NOT NULL
);

-- Ratings a refresh folded into the served run's lists, on top of its ratings; a later run
-- has its own (the night's load reads incoming/ itself).
CREATE TABLE IF NOT EXISTS refresh_ratings (
    run_id   TEXT    NOT NULL REFERENCES model_runs (run_id),
    user_id  INTEGER NOT NULL,
    movie_id INTEGER NOT NULL,
    rating   REAL    NOT NULL,
    rated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, user_id, movie_id)
) WITHOUT ROWID;

-- The files of incoming/ a refresh has read for a run: read again only when they change.
CREATE TABLE IF NOT EXISTS refresh_files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    run_id   TEXT NOT NULL
);

-- The movies the served run's rules in force block now (recjobs/method/rules.py, in SQL): what
-- the cold_start canned query leaves out. sql/rule_violations.sql checks the stored lists.
CREATE VIEW IF NOT EXISTS current_blocked_movies AS
WITH run AS (
    SELECT coalesce(r.rules_json, '{}') AS rules, CAST(strftime('%s', 'now') AS INTEGER) AS now
    FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id
)
SELECT m.movie_id
FROM movies AS m, run
WHERE run.rules != '{}' AND (
    m.movie_id IN (SELECT value FROM json_each(run.rules, '$.exclude_movies'))
    OR EXISTS (SELECT 1 FROM json_each(run.rules, '$.exclude_genres') AS g
               WHERE instr('|' || m.genres || '|', '|' || g.value || '|') > 0)
    OR (json_array_length(run.rules, '$.only_genres') > 0
        AND NOT EXISTS (SELECT 1 FROM json_each(run.rules, '$.only_genres') AS g
                        WHERE instr('|' || m.genres || '|', '|' || g.value || '|') > 0))
    OR (json_extract(run.rules, '$.min_year') IS NOT NULL
        AND (m.year IS NULL OR m.year < json_extract(run.rules, '$.min_year')))
    OR (json_extract(run.rules, '$.max_year') IS NOT NULL
        AND (m.year IS NULL OR m.year > json_extract(run.rules, '$.max_year')))
    OR EXISTS (SELECT 1 FROM json_each(run.rules, '$.available') AS w
               WHERE json_extract(w.value, '$.movie_id') = m.movie_id
                 AND ((json_extract(w.value, '$.from') IS NOT NULL AND run.now < json_extract(w.value, '$.from'))
                      OR (json_extract(w.value, '$.until') IS NOT NULL
                          AND run.now >= json_extract(w.value, '$.until'))))
);
