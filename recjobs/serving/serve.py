"""serve: datasette on the published database, read-only.

sql/datasette.yaml holds the profiles (datasette settings) and the metadata; each canned
query's SQL is sql/<query name>.sql. The database is opened in datasette's normal
read-only mode (`mode=ro`, not immutable): every request reads the current
`published_run` pointer, so a newly published run is served without a restart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from ..errors import StateError
from ..settings import Settings, from_env
from ..storage.db import sql
from .config import DATABASE, datasette_config

log = logging.getLogger(__name__)

# what `serve` hands each worker process's asgi_app()
ASGI_DB, ASGI_PROFILE, ASGI_ARTIFACTS = "RECJOBS_SERVE_DB", "RECJOBS_SERVE_PROFILE", "RECJOBS_SERVE_ARTIFACTS"


def check_database(path: Path) -> None:
    """Fail with one line unless the file is a recjobs database datasette can open read-only."""
    if not path.is_file():
        raise StateError(f"{path}: no database; run `recjobs run` first to build and publish one")
    published = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems == ["ok"]:
                published = conn.execute(sql("publish.current_id")).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        if "malformed" in str(e):
            problems = [str(e)]
        else:
            raise StateError(
                f"{path}: cannot read it as a recjobs database ({e}); the folder must be "
                "writable for SQLite's -wal/-shm files, or run `recjobs run` to build it"
            ) from None
    if problems != ["ok"]:
        raise StateError(
            f"{path}: the database is damaged (quick_check: {problems[0][:200]}); restore it from a copy "
            "or build a new one with `recjobs run --db NEW`"
        )
    if published is None:
        log.warning("%s has no published run yet: model_info reports it until a run is published", path)


def build_datasette(db_path: Path, profile: str = "default", artifacts: Path | None = None):
    """A Datasette instance over db_path (read-only) with the profile's configuration; the
    cold-start route reads the published run's bundle under `artifacts` (default: the settings')."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    from . import datasette_plugin

    if not pm.is_registered(datasette_plugin):
        pm.register(datasette_plugin, name=datasette_plugin.__name__)
    # With `rich` installed (Airflow brings it), datasette prints every 4xx as a traceback
    # with all locals: ~0.5 s of CPU per bad request and request data in the log.
    # Unhandled errors (500) still print a plain traceback.
    import datasette.handle_exception

    datasette.handle_exception.rich = None
    config = datasette_config(profile)
    ds = Datasette(files=[str(db_path)], metadata=config.metadata, settings=config.settings, cors=False, crossdb=False)
    name = next(n for n, d in ds.databases.items() if d.path and Path(d.path) == Path(db_path))
    if name != DATABASE:
        database = ds.databases[name]
        ds.remove_database(name)
        ds.add_database(database, name=DATABASE)
    assert ds.databases[DATABASE].is_mutable  # mode=ro, re-read on every request; never immutable
    ds._recjobs_artifacts = Path(artifacts) if artifacts else from_env().artifacts  # read by the plugin
    return ds


def worker_count(settings: Settings) -> int:
    return settings.serve_workers or os.cpu_count() or 1


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8001, reporting: bool = False) -> None:
    """Serve settings.db with datasette until interrupted, in settings.serve_workers processes
    (uvicorn workers, each with its own datasette over the same read-only file)."""
    import uvicorn

    db_path = Path(settings.db).resolve()
    check_database(db_path)
    profile = "reporting" if reporting else "default"
    workers = worker_count(settings)
    os.environ[ASGI_DB], os.environ[ASGI_PROFILE] = str(db_path), profile  # read by each worker's app()
    os.environ[ASGI_ARTIFACTS] = str(Path(settings.artifacts).resolve())
    log.info(
        "serving %s read-only at http://%s:%d/%s (profile %s, %d processes)",
        db_path,
        host,
        port,
        DATABASE,
        profile,
        workers,
    )
    uvicorn.run(
        "recjobs.serving.serve:asgi_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        access_log=log.isEnabledFor(logging.DEBUG),
        log_level="info" if log.isEnabledFor(logging.DEBUG) else "warning",
    )


def asgi_app():
    """The ASGI app of one server process: datasette over the file `serve` checked."""
    return build_datasette(
        Path(os.environ[ASGI_DB]), os.environ.get(ASGI_PROFILE, "default"), os.environ.get(ASGI_ARTIFACTS)
    ).app()
