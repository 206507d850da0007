"""The database layer: one SQLAlchemy engine per file, WAL, explicit transactions.

Functions that write take a connection; `transaction(path)` opens the file and owns
the transaction. The SQL itself lives in sql/*.sql.

SQLAlchemy is imported on first use: the cold-start hot paths (`recjobs cold-start`, the
server's cold-start route) use the standard library's sqlite3 through `plain_reading`,
`plain_transaction` and `snapshot`, because SQLAlchemy's import alone (about 0.17 s) is
most of a short command's time.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MAX_ID = 2**31 - 1  # the largest user or movie id accepted anywhere (input files, cold start)


@functools.cache
def sql(name: str) -> str:
    """The text of sql/<name>.sql, or of one `-- name: NAME` section as `file.NAME`."""
    file_name, _, section = name.partition(".")
    body = (SQL_DIR / f"{file_name}.sql").read_text(encoding="utf-8")
    if not section:
        return body
    sections = dict(
        (m.group(1), m.group(2).strip())
        for m in re.finditer(r"^-- name: (\w+)\n(.*?)(?=^-- name: |\Z)", body, re.M | re.S)
    )
    if section not in sections:
        raise KeyError(f"sql/{file_name}.sql has no section '-- name: {section}'")
    return sections[section]


def query(name: str):
    from sqlalchemy import text

    return text(sql(name))


@functools.cache
def _engine(path: str) -> Engine:
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # writers take the write lock up front; readers get a snapshot and never wait on a writer
        deferred = conn.get_execution_options().get("deferred")
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.executescript(sql("schema"))
        upgrade(raw)
    return engine


UPGRADES = (  # (table, column): sql/schema_upgrades.sql <table>_<column>
    ("model_runs", "gate_protocol"),
    ("model_runs", "rules_json"),
    ("recommendations", "refreshed_at"),
    ("recommendations", "because_movie_id"),
    ("cold_start_recommendations", "because_movie_id"),
)


def upgrade(raw: sqlite3.Connection) -> None:
    """Add the columns of UPGRADES a database made before them lacks."""
    for table, column in UPGRADES:
        if column not in {row[1] for row in raw.execute(f"PRAGMA table_info({table})")}:
            raw.executescript(sql(f"schema_upgrades.{table}_{column}"))


@functools.cache
def _read_only_engine(path: str) -> Engine:
    from sqlalchemy import create_engine, event

    def connect():
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


@contextlib.contextmanager
def read_only(path: Path):
    """A snapshot read of an existing recjobs database, opened read-only (SQLite mode=ro): it
    never creates the file, the schema or anything else. For commands that only read."""
    from sqlalchemy.exc import OperationalError

    from ..errors import IO_ERROR, StateError

    if not Path(path).is_file():
        raise StateError(f"{path}: no database; run `recjobs run` first")
    with _read_only_engine(str(Path(path).resolve())).connect() as conn, conn.begin():
        try:
            conn.exec_driver_sql("SELECT 1 FROM published_run LIMIT 0")
        except OperationalError as e:
            if any(m in str(e.orig) for m in IO_ERROR):
                raise
            raise StateError(f"{path}: not a recjobs database ({e.orig}); expected one `recjobs run` built") from None
        yield conn


def engine_for(path: Path) -> Engine:
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _engine(str(path))


@contextlib.contextmanager
def transaction(path: Path):
    """A connection inside one write transaction: committed on success, rolled back on error."""
    with engine_for(path).begin() as conn:
        yield conn


@contextlib.contextmanager
def reading(path: Path):
    """A connection whose reads share one snapshot (a deferred transaction, no write lock)."""
    with engine_for(path).connect().execution_options(deferred=True) as conn:
        yield conn


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection):
    """Reads on a stdlib sqlite3 connection (autocommit, isolation_level None) that share one
    snapshot: a deferred transaction, no write lock, so a publish meanwhile is seen whole or not."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # reads only: ending the snapshot undoes nothing


def plain_connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A stdlib sqlite3 connection to an existing database, autocommit, with the engine's pragmas."""
    target = f"file:{Path(path).resolve()}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(target, uri=read_only, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=60000")
    if read_only:
        conn.execute("PRAGMA query_only=1")
    else:
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


_plain_connections = threading.local()


def _plain_connection(path: Path) -> sqlite3.Connection:
    """This thread's connection to the file, kept like the engines' pools: opening one and
    reading the schema again would cost more than a cold-start request."""
    kept = _plain_connections.__dict__.setdefault("by_path", {})
    key = str(Path(path).resolve())
    if key not in kept:
        kept[key] = plain_connect(Path(key))
    return kept[key]


@contextlib.contextmanager
def plain_reading(path: Path):
    """`reading` on the standard library's sqlite3: one snapshot of an existing database."""
    with snapshot(_plain_connection(path)) as conn:
        yield conn


_plain_upgraded: set[str] = set()


def plain_upgrade(path: Path) -> None:
    """`upgrade` on this process's plain connection, once per database: a database no job has
    opened since the code was updated gets its new columns before a plain write."""
    key = str(Path(path).resolve())
    if key not in _plain_upgraded:
        upgrade(_plain_connection(path))
        _plain_upgraded.add(key)


@contextlib.contextmanager
def plain_transaction(path: Path):
    """`transaction` on the standard library's sqlite3: the write lock up front, committed on
    success, rolled back on error."""
    conn = _plain_connection(path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert_many(conn: Connection, name: str, rows, chunk: int = 50_000) -> int:
    """Run sql/<name>.sql (qmark placeholders) over an iterable of tuples, `chunk` at a time."""
    statement = sql(name)
    rows, total = iter(rows), 0
    while batch := list(itertools.islice(rows, chunk)):
        conn.exec_driver_sql(statement, batch)
        total += len(batch)
    return total


def check_integrity(conn: Connection, path: Path) -> None:
    """PRAGMA quick_check on a connection; a StateError naming the first problem if the file is
    damaged (publishing into it, or serving it, would spread the damage or hide it)."""
    from sqlalchemy.exc import DBAPIError

    from ..errors import StateError

    try:
        problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
    except DBAPIError as e:
        problems = [str(e.orig)]
    if problems != ["ok"]:
        raise StateError(
            f"{path}: the database is damaged (quick_check: {problems[0][:200]}); restore it from a copy "
            "or build a new one with `recjobs run --db NEW`"
        )
