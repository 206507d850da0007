"""The datasette plugin `recjobs serve` registers: read-only in depth.

- Only GET and HEAD reach datasette (a POST to a canned query would otherwise run it).
- Connections to the recommendations database are `PRAGMA query_only`, on top of
  datasette's `mode=ro`, and may not ATTACH other files.
"""

from __future__ import annotations

import sqlite3

from datasette import hookimpl

READ_METHODS = {"GET", "HEAD"}
DENIED_ACTIONS = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


def _authorize(action, *_):
    return sqlite3.SQLITE_DENY if action in DENIED_ACTIONS else sqlite3.SQLITE_OK


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
            if scope["type"] == "http" and scope["method"] not in READ_METHODS:
                body = b"405 Method Not Allowed: this server is read-only (GET and HEAD only)\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 405,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"allow", b"GET, HEAD"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return read_only

    return wrap
