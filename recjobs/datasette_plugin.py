"""The datasette plugin `recjobs serve` registers: read-only in depth.

- Only GET and HEAD reach datasette (a POST to a canned query would otherwise run it).
- Connections to the recommendations database are `PRAGMA query_only`, on top of
  datasette's `mode=ro`, may not ATTACH other files, and may not call the functions that
  reach outside SQL (fts3_tokenizer returns a native pointer).
- A request with a query string over MAX_QUERY_BYTES (414) or more than MAX_PARAMETERS
  parameters (400) is answered at once: datasette parses the query string once per
  parameter, so one such request could otherwise hold up every other client.
"""

from __future__ import annotations

import sqlite3

from datasette import hookimpl

READ_METHODS = {"GET", "HEAD"}
DENIED_ACTIONS = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}
DENIED_FUNCTIONS = {"fts3_tokenizer", "load_extension", "readfile", "writefile", "edit", "fts5_tokenizer"}
MAX_QUERY_BYTES = 8192
MAX_PARAMETERS = 50


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


@hookimpl
def prepare_connection(conn, database):
    from .serve import DATABASE

    if database == DATABASE:
        conn.execute("PRAGMA query_only = 1")
        conn.set_authorizer(_authorize)


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def read_only(scope, receive, send):
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
            await app(scope, receive, send)

        return read_only

    return wrap
