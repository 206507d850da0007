"""Storage: the SQLite database (db), the per-run folder (artifacts), the run record (runs),
publishing and rollback (publish), and reading MovieLens-layout input (movielens)."""
