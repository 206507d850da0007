"""The datasette plugin `recjobs serve` registers: read-only in depth.

- Only GET and HEAD reach datasette (a POST to a canned query would otherwise run it).
- Connections to the recommendations database are `PRAGMA query_only`, on top of
  datasette's `mode=ro`, may not ATTACH other files, and may not call the functions that
  reach outside SQL (fts3_tokenizer returns a native pointer).
- A request with a query string over MAX_QUERY_BYTES (414) or more than MAX_PARAMETERS
  parameters (400) is answered at once: datasette parses the query string once per
  parameter, so one such request could otherwise hold up every other client.
- The default profile answers only the canned queries, the movie catalogue (its table and
  row pages) and static files (default_profile_paths); every other table is hidden from
  its pages too.
- A bad sort or `_through` argument is a 400 with one line, not a 500; a damaged database
  is a 500 that says so, never a 400 that blames the request.
- `/-/health`: the published run, its age and how many users it serves; 503 when none.
- `/recs/-/cold_start.json?liked=296,318,593&k=10[&user_id=N]`: the cold-start job's answer
  for a new user (recjobs.jobs.cold_start.answer, from the published run's memory-mapped
  bundle, with the run's rules in force and user N's hidden movies left out), computed in the
  server process and answered by the ASGI wrapper itself, after the checks above and with the
  ETag; nothing is stored.
- The lookups applications call all day (LOOKUP_QUERIES: a user's recommendations and
  history, a movie's neighbours) asked as `.json?...&_shape=array` with only their own
  parameters are answered by the wrapper too: the canned query's SQL, run as datasette
  runs it (same parameters, row limit and time limit) on this process's own read-only
  connection, answered with datasette's bytes and headers. Any other argument, shape or
  error goes to datasette, as does HEAD.
- Answers of the canned queries that read only the published run (RUN_KEYED_QUERIES) carry
  an ETag made from the published run, its publish time and its latest refresh, read before
  the query runs: a client sending it back gets 304 until the next publish or refresh, and an
  answer is never older than its ETag.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path

from datasette import hookimpl

from ..storage.db import sql
from .config import DATABASE, canned_query_names

log = logging.getLogger(__name__)

READ_METHODS = {"GET", "HEAD"}
DENIED_ACTIONS = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}
DENIED_FUNCTIONS = {"fts3_tokenizer", "load_extension", "readfile", "writefile", "edit", "fts5_tokenizer"}
MAX_QUERY_BYTES = 8192
MAX_PARAMETERS = 50
RUN_KEYED_QUERIES = (
    "recommendations_for_user",
    "similar_movies",
    "cold_start",
    "user_history",
    "most_recommended_movies",
    "catalog_coverage",
    "genre_mix",
    "users_by_history_length",
)
COLD_START_PATH = "/recs/-/cold_start.json"
RUN_KEYED_PATH = re.compile(rf"/recs/({'|'.join(RUN_KEYED_QUERIES)})\.json|{re.escape(COLD_START_PATH)}")
LOOKUP_QUERIES = ("recommendations_for_user", "similar_movies", "user_history", "cold_start")
LOOKUP_PATH = re.compile(rf"/recs/({'|'.join(LOOKUP_QUERIES)})\.json")
JSON_HEADERS = [
    (b"referrer-policy", b"no-referrer"),
    (b"content-type", b"application/json; charset=utf-8"),
    (b"vary", b"Cookie, Authorization"),
]  # what datasette sends with a canned query's JSON
COLD_START_COLUMNS = ("movie_id", "title", "genres", "year", "score", "because_movie_id", "because_title")
COLD_START_EXAMPLE = "e.g. ?liked=296,318,593&k=10"
PUBLIC_TABLES = {"movies"}  # the default profile's only table, by row pages
HEALTH_SQL = sql("health")
DAMAGE_MESSAGES = ("database disk image is malformed", "file is not a database")
DAMAGED = "the server's database is damaged (%s); this is not a fault of the request: the operator must restore it"
CLOSED = (
    "403 Forbidden: this server answers only the canned queries (listed at /recs), the movie "
    "catalogue (/recs/movies) and static files\n"
)


def profile_of(datasette) -> str:
    profile = getattr(datasette, "_recjobs_profile", None)  # asked several times a request: kept
    if profile is None:
        profile = datasette._recjobs_profile = (datasette.plugin_config("recjobs") or {}).get("profile", "default")
    return profile


def default_profile_paths(canned_queries) -> re.Pattern:
    names = "|".join(re.escape(name) for name in canned_queries)
    return re.compile(
        rf"/|/recs(\.json)?|/recs/({names}|movies)(\.json)?|/recs/movies/[0-9]+(\.json)?"
        rf"|/-/health(\.json)?|{re.escape(COLD_START_PATH)}|/-/static/[A-Za-z0-9_-][A-Za-z0-9_.-]*"
        r"|/-/static-plugins/[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+|/favicon\.ico"
    )


def _authorize(action, arg1, arg2, *_):
    if action in DENIED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


async def _refuse(send, status: int, text: str, headers=()) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _damage_in(body: bytes) -> str | None:
    """The SQLite damage message a datasette 400 page or JSON carries as its whole error, if any."""
    for message in DAMAGE_MESSAGES:
        if f'"error": "{message}"'.encode() in body or f">{message}<".encode() in body:
            return message
    return None


def _damage_as_server_error(send):
    """Wrap send so a 400 whose error is SQLite's damage message goes out as a 500."""
    held = None

    async def guarded(message):
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message
            return None
        if held is None:
            return await send(message)
        body = message.get("body", b"")
        if message.get("more_body"):  # datasette sends 400 pages whole; pass anything else on as is
            start, held = held, None
            await send(start)
            return await send(message)
        damage = _damage_in(body)
        if damage is None:
            start = held
        else:
            body = body.replace(damage.encode(), (DAMAGED % damage).encode(), 1)
            headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
            start = {**held, "status": 500, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        held = None
        await send(start)
        return await send({**message, "body": body})

    return guarded


@hookimpl
def prepare_connection(conn, database):

    if database == DATABASE:
        conn.execute("PRAGMA query_only = 1")
        conn.set_authorizer(_authorize)


@hookimpl
def permission_allowed(datasette, actor, action, resource):
    if profile_of(datasette) != "default":
        return None
    if action == "view-table" and resource[1] not in PUBLIC_TABLES:
        return False
    if action in ("view-database-download", "execute-sql", "permissions-debug", "debug-menu"):
        return False
    return None


@hookimpl
def handle_exception(datasette, request, exception):
    """Client mistakes datasette answers with 500 become 400; damage says it is the server's."""
    from datasette.handle_exception import handle_exception as render
    from datasette.views.base import DatasetteError

    if isinstance(exception, DatasetteError) and str(exception.message).startswith("Cannot sort table by"):
        column = str(exception.message).removeprefix("Cannot sort table by ")
        return render(datasette, request, DatasetteError(f"_sort: no column {column!r} to sort by", status=400))
    if isinstance(exception, json.JSONDecodeError) and "_through" in request.args:
        message = '_through must be JSON like {"table": "...", "column": "...", "value": "..."}'
        return render(datasette, request, DatasetteError(message, status=400))
    if isinstance(exception, sqlite3.DatabaseError) and str(exception) in DAMAGE_MESSAGES:
        return render(datasette, request, DatasetteError(DAMAGED % exception, status=500))
    return None


def own_connection(datasette) -> sqlite3.Connection:
    """This process's own read-only connection (autocommit, query_only) for the health, ETag
    and cold-start reads; used only on the event loop's thread."""
    conn = getattr(datasette, "_recjobs_pointer", None)
    if conn is None:
        from ..storage.db import plain_connect

        conn = datasette._recjobs_pointer = plain_connect(Path(datasette.get_database(DATABASE).path), read_only=True)
        conn.set_authorizer(_authorize)
    return conn


def published_run(datasette) -> tuple | None:
    """(run_id, published_at, n_users) of the published run, or None: one indexed read (tens of
    microseconds) on this process's own read-only connection."""
    return own_connection(datasette).execute(HEALTH_SQL).fetchone()


def etag_of(published: tuple) -> bytes:
    """The run, its publish time and its latest refresh: a refresh remakes lists of the run."""
    run_id, published_at, last_refresh = published[0], published[1], published[3]
    return b'"' + hashlib.sha256(f"{run_id}|{published_at}|{last_refresh}".encode()).hexdigest()[:24].encode() + b'"'


def _with_etag(send, etag: bytes):
    async def tagged(message):
        if message["type"] == "http.response.start" and message["status"] == 200:
            headers = [(k, v) for k, v in message["headers"] if k.lower() not in (b"etag", b"cache-control")]
            message = {**message, "headers": [*headers, (b"etag", etag), (b"cache-control", b"no-cache")]}
        await send(message)

    return tagged


async def _not_modified(send, etag: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": 304, "headers": [(b"etag", etag), (b"cache-control", b"no-cache")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def health(datasette):
    from datasette.utils.asgi import Response

    no_store = {"cache-control": "no-store"}
    try:
        published = published_run(datasette)
    except Exception as e:  # noqa: BLE001 - any failure to read is "unhealthy", said in one line
        return Response.json({"ok": False, "error": f"cannot read the database: {e}"}, status=503, headers=no_store)
    if published is None:
        answer = {"ok": False, "run_id": None, "error": "no published run yet; run `recjobs run`"}
        return Response.json(answer, status=503, headers=no_store)
    run_id, published_at, n_users, _, last_refreshed_at = published
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(published_at)
    answer = {
        "ok": True,
        "run_id": run_id,
        "published_at": published_at,
        "age_hours": round(age.total_seconds() / 3600, 3),
        "n_users": n_users,
        "last_refreshed_at": last_refreshed_at,
    }
    return Response.json(answer, headers=no_store)


def _json_error(message: str, status: int):
    from datasette.utils.asgi import Response

    return Response.json({"ok": False, "error": message, "status": status, "title": None}, status=status)


async def cold_start_answer(datasette, request):
    """A new user's recommendations: the cold-start job's answer (same function, same numbers),
    read from one snapshot so a publish meanwhile is answered from one run entirely. The server
    stays read-only: the request is not stored (under `recjobs -v serve` the access log keeps it)."""
    from datasette.utils.asgi import Response

    from ..errors import ConfigError, StateError
    from ..jobs import cold_start
    from ..storage import db

    started = time.perf_counter()
    args = request.args  # parsed on every access: once
    try:
        for name in ("liked", "k", "_shape", "user_id"):
            if len(args.getlist(name)) > 1:
                raise ConfigError(f"{name}: given {len(args.getlist(name))} times; expected once")
        shape = args.get("_shape") or "objects"
        if shape not in ("objects", "array"):
            raise ConfigError(f"_shape: {shape[:40]!r} is not offered here; expected objects or array")
        liked = cold_start.parse_liked(args.get("liked"), COLD_START_EXAMPLE)
        k = cold_start.check_k(args.get("k") or 10)
        user_id = cold_start.check_user_id(args.get("user_id"))
        conn = own_connection(datasette)
        with db.snapshot(conn):
            found = cold_start.answer(conn, datasette._recjobs_artifacts, liked, k, DATABASE, user_id)
    except ConfigError as e:
        return _json_error(str(e), 400)
    except cold_start.NothingPublished as e:
        return _json_error(str(e), 503)
    except sqlite3.DatabaseError as e:
        if str(e) in DAMAGE_MESSAGES:
            return _json_error(DAMAGED % e, 500)
        raise
    except (StateError, OSError) as e:  # the bundle or the run's files: the operator's problem
        log.warning("cold start over HTTP cannot answer: %s", e)
        return _json_error("cold start is unavailable: the published run's files cannot be read (see the log)", 503)
    rows = [{name: getattr(r, name) for name in COLD_START_COLUMNS} for r in found.recommendations]
    log.debug(
        "cold start over HTTP: liked %s (unknown %s), k %d -> %s from run %s in %.2f ms",
        found.liked,
        found.unknown_ids,
        k,
        found.method,
        found.run_id,
        (time.perf_counter() - started) * 1000,
    )
    if shape == "array":
        return Response.json(rows)
    return Response.json(
        {
            "ok": True,
            "database": DATABASE,
            "query_name": "cold_start",
            "run_id": found.run_id,
            "method": found.method,
            "liked": list(found.liked),
            "unknown_ids": list(found.unknown_ids),
            "k": k,
            "columns": list(COLD_START_COLUMNS),
            "rows": rows,
            "truncated": False,
            "query_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    )


def lookup_queries(datasette) -> dict[str, tuple[str, frozenset]]:
    """name -> (SQL, declared parameters) of the LOOKUP_QUERIES this profile serves."""
    kept = getattr(datasette, "_recjobs_lookups", None)
    if kept is None:
        queries = datasette.metadata("queries", database=DATABASE) or {}
        kept = datasette._recjobs_lookups = {
            name: (queries[name]["sql"], frozenset(queries[name].get("params") or ()))
            for name in LOOKUP_QUERIES
            if name in queries and "params" in queries[name]
        }
    return kept


def lookup_answer(datasette, name: str, query_string: bytes) -> bytes | None:
    """The body datasette would send for /recs/<name>.json?<query_string> when it is a plain
    `_shape=array` lookup with only the query's own parameters (each once); else None."""
    from datasette.utils import CustomJSONEncoder, remove_infinites, sqlite_timelimit

    found = lookup_queries(datasette).get(name)
    if found is None:
        return None
    sql_text, declared = found
    args = urllib.parse.parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    given = dict(args)
    if len(given) != len(args) or given.pop("_shape", None) != "array" or not given.keys() <= declared:
        return None
    params = {p: "" for p in declared} | given  # datasette: a missing parameter is ""
    limit = datasette.setting("max_returned_rows")
    conn = own_connection(datasette)
    try:
        with sqlite_timelimit(conn, datasette.setting("sql_time_limit_ms")):
            cursor = conn.execute(sql_text, params)
            rows = cursor.fetchmany(limit + 1)
    except sqlite3.Error:
        return None  # datasette runs it again and answers the error its own way
    columns = [d[0] for d in cursor.description]
    answer = [dict(zip(columns, remove_infinites(row), strict=True)) for row in rows[:limit]]
    return json.dumps(answer, cls=CustomJSONEncoder).encode()


async def _send_json(send, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@hookimpl
def register_routes():
    return [(r"^/-/health(\.json)?$", health)]


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        allowed_paths = None

        async def read_only(scope, receive, send):
            nonlocal allowed_paths
            if scope["type"] == "http":
                query = scope.get("query_string", b"")
                if scope["method"] not in READ_METHODS:
                    text = "405 Method Not Allowed: this server is read-only (GET and HEAD only)\n"
                    return await _refuse(send, 405, text, [(b"allow", b"GET, HEAD")])
                if len(query) > MAX_QUERY_BYTES:
                    text = f"414 URI Too Long: {len(query)} bytes of query string; expected at most {MAX_QUERY_BYTES}\n"
                    return await _refuse(send, 414, text)
                if query.count(b"&") + 1 > MAX_PARAMETERS:
                    text = f"400 Bad Request: {query.count(b'&') + 1} parameters; expected at most {MAX_PARAMETERS}\n"
                    return await _refuse(send, 400, text)
                if profile_of(datasette) == "default":
                    if allowed_paths is None:
                        allowed_paths = default_profile_paths(canned_query_names())
                    raw = scope.get("raw_path") or scope["path"].encode()
                    paths = {scope["path"], raw.decode("ascii", "replace").partition("?")[0]}
                    if not all(allowed_paths.fullmatch(path) for path in paths):
                        return await _refuse(send, 403, CLOSED)
                send = _damage_as_server_error(send)
                if RUN_KEYED_PATH.fullmatch(scope["path"]):
                    try:
                        published = published_run(datasette)
                    except Exception:  # noqa: BLE001 - no ETag; the query itself reports the problem
                        published = None
                    if published is not None:
                        etag = etag_of(published)
                        asked = dict(scope["headers"]).get(b"if-none-match", b"")
                        if etag in [tag.strip() for tag in asked.split(b",")]:
                            return await _not_modified(send, etag)
                        send = _with_etag(send, etag)
                lookup = LOOKUP_PATH.fullmatch(scope["path"])
                if lookup and scope["method"] == "GET":
                    body = lookup_answer(datasette, lookup[1], query)
                    if body is not None:
                        return await _send_json(send, body)
                if scope["path"] == COLD_START_PATH:  # answered here: datasette's per-request work is most of its time
                    from datasette.utils.asgi import Request

                    response = await cold_start_answer(datasette, Request(scope, receive))
                    return await response.asgi_send(send)
            await app(scope, receive, send)

        return read_only

    return wrap
