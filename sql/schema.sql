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
    gate_protocol           TEXT    -- 'temporal' or 'leave-last-out': the figures the quality gate used
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
SELECT r.user_id, r.rank, r.movie_id, m.title, r.score
FROM published_run AS p
JOIN recommendations AS r ON r.run_id = p.run_id
LEFT JOIN movies AS m ON m.movie_id = r.movie_id;

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
    PRIMARY KEY (request_id, rank)
) WITHOUT ROWID;
