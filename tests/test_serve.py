"""recjobs serve, default profile: a real datasette server over a database built by
`recjobs run` on ml-latest-small. The JSON contract, the reports and the hardening."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from packaging.version import Version

from recjobs.serving import config as serving_config
from recjobs.serving import serve
from recjobs.storage.db import SQL_DIR
from support import (
    ATTACK,
    REPO,
    WRITE_SQL,
    chromium,
    copy_db,
    damage_table,
    database_digest,
    doc_section,
    running_server,
)

# The documented columns of each canned query (README "Serving with datasette").
COLUMNS = {
    "rule_violations": ["rule", "n_rows", "n_users", "example_user_id"],
    "recommendations_for_user": [
        "run_id",
        "user_id",
        "rank",
        "movie_id",
        "title",
        "genres",
        "year",
        "score",
        "refreshed_at",
        "because_movie_id",
        "because_title",
        "error",
    ],
    "user_history": ["user_id", "movie_id", "title", "genres", "year", "rating", "rated_at", "rated_at_utc", "error"],
    "similar_movies": ["run_id", "movie_id", "rank", "similar_movie_id", "title", "genres", "year", "score", "error"],
    "cold_start": ["run_id", "rank", "movie_id", "title", "genres", "year", "score", "n_seeds", "error"],
    "model_info": [
        "run_id",
        "published_at",
        "started_at",
        "recall_at_10",
        "ndcg_at_10",
        "popularity_recall_at_10",
        "popularity_ndcg_at_10",
        "metrics_json",
        "n_users",
        "n_movies",
        "n_catalog_movies",
        "params_json",
        "error",
    ],
    "run_metrics_history": [
        "run_id",
        "started_at",
        "published_at",
        "status",
        "status_reason",
        "is_current",
        "recall_at_10",
        "ndcg_at_10",
        "popularity_recall_at_10",
        "popularity_ndcg_at_10",
        "n_users",
        "n_movies",
        "n_ratings",
    ],
    "most_recommended_movies": ["movie_id", "title", "genres", "year", "n_users", "share_of_users", "mean_rank"],
    "catalog_coverage": [
        "run_id",
        "n_catalog_movies",
        "n_rated_movies",
        "n_recommended_movies",
        "coverage_of_catalog",
        "coverage_of_rated",
    ],
    "genre_mix": ["genre", "n_recommendations", "n_ratings", "share_of_recommendations", "share_of_ratings"],
    "users_by_history_length": ["history_length", "min_ratings", "max_ratings", "n_users"],
}
EXAMPLE_PARAMS = {
    "recommendations_for_user": {"user_id": "1", "k": "10"},
    "user_history": {"user_id": "1"},
    "similar_movies": {"movie_id": "1", "k": "5"},
    "cold_start": {"liked": "296,318,593", "k": "10"},
}
ALLOWED_PLUGINS = {
    "datasette-dashboards",
    "datasette-leaflet",
    "datasette-render-markdown",
    "recjobs.serving.datasette_plugin",
}


@pytest.fixture(scope="module")
def db_copy(published_settings, tmp_path_factory) -> Path:
    return copy_db(published_settings.db, tmp_path_factory.mktemp("serve") / "recs.db")


@pytest.fixture(scope="module")
def server(db_copy):
    with running_server(db_copy, db_copy.parent / "serve.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def ro(db_copy):
    conn = sqlite3.connect(f"file:{db_copy}?mode=ro", uri=True)
    yield conn
    conn.close()


def published_run_id(ro) -> str:
    return ro.execute("SELECT run_id FROM published_run").fetchone()[0]


def table_counts(conn) -> dict:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


# --- configuration -------------------------------------------------------------------


def test_every_canned_query_in_the_config_has_its_sql_file_and_a_documented_shape():
    names = serving_config.canned_query_names()
    assert set(names) == set(COLUMNS)
    for name in names:
        text = (SQL_DIR / f"{name}.sql").read_text()
        assert text.startswith(("-- Canned query", "-- Report")), name
    # and every canned-query or report file is in the config
    headed = {p.stem for p in SQL_DIR.glob("*.sql") if p.read_text().startswith(("-- Canned query", "-- Report"))}
    assert headed == set(names)


def test_each_profile_gets_its_sql_from_the_files():
    for profile in serving_config.PROFILES:
        config = serving_config.datasette_config(profile)
        for name, query in config.metadata["databases"]["recs"]["queries"].items():
            assert query["sql"] == (SQL_DIR / f"{name}.sql").read_text()
    charts = serving_config.datasette_config("reporting").metadata["plugins"]["datasette-dashboards"]["run-metrics"][
        "charts"
    ]
    assert all("query_file" not in c and c["query"].lstrip().startswith("-- Dashboard") for c in charts.values())


def test_profiles_turn_arbitrary_sql_off_by_default_and_on_for_reporting():
    default, reporting = serving_config.datasette_config("default"), serving_config.datasette_config("reporting")
    assert default.settings["default_allow_sql"] is False
    assert reporting.settings["default_allow_sql"] is True
    for config in (default, reporting):
        assert 0 < config.settings["sql_time_limit_ms"] <= 5000
        assert 0 < config.settings["max_returned_rows"] <= 5000
        assert config.settings["allow_download"] is False
        assert config.settings["default_cache_ttl"] == 0
    assert default.metadata["plugins"] == {"recjobs": {"profile": "default"}}  # no dashboard: it needs SQL
    assert reporting.metadata["plugins"]["recjobs"] == {"profile": "reporting"}


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(
        serving_config.ConfigError, match="unknown serving profile 'admin'; expected one of default, reporting"
    ):
        serving_config.datasette_config("admin")


def test_serve_without_a_database_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "recjobs", "serve", "--db", str(tmp_path / "none.db"), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"Error: {tmp_path / 'none.db'}: no database; run `recjobs run` first to build and publish one"
    )


# --- the live server: settings and plugins -------------------------------------------


def in_process(db: Path, profile: str, *paths: str) -> list:
    """GET each path from datasette in this process (the plugin included), in one event loop."""
    import asyncio

    ds = serve.build_datasette(db.resolve(), profile)

    async def ask():
        return [await ds.client.get(path) for path in paths]

    return asyncio.run(ask())


def test_live_server_uses_the_default_profile_and_opens_the_file_read_only(server, db_copy):
    ds = serve.build_datasette(db_copy.resolve())
    for name, value in serving_config.datasette_config("default").settings.items():
        assert ds.setting(name) == value, name
    assert set(ds.databases) - {"_internal"} == {"recs"}  # no _memory database to run SQL in
    assert ds.databases["recs"].is_mutable is True  # mode=ro, not immutable
    assert server.get("/recs.json", params={"sql": "SELECT 1"}).status_code == 403  # no arbitrary SQL
    assert server.get("/recs/model_info.json", params={"sql": "SELECT 1"}).json()["columns"] == COLUMNS["model_info"]
    assert server.get("/-/dashboards/run-metrics").status_code == 403  # reporting profile only


def test_datasette_is_a_release_with_the_065_security_fixes_and_no_write_plugins(db_copy):
    versions, plugins = in_process(db_copy, "reporting", "/-/versions.json", "/-/plugins.json")
    version = Version(versions.json()["datasette"]["version"])
    assert Version("0.65.4") <= version < Version("0.66")
    plugins = {p["name"] for p in plugins.json()}
    assert plugins <= ALLOWED_PLUGINS, plugins - ALLOWED_PLUGINS


CLOSED_PATHS = [
    "/recs/ratings.json?user_id=1",
    "/recs/ratings/1.json",
    "/recs/ratin~67s.json?user_id=1",  # datasette's tilde escape of ratings
    "/recs/%72atings.json",
    "/recs/model_runs.json?_col=artifacts_dir",
    "/recs/run_metrics.json",
    "/recs/recommendations.json",
    "/recs/current_recommendations.json",
    "/recs/cold_start_requests.json",
    "/recs/published_run.json",
    "/recs.db",
    "/_memory.json?sql=SELECT+1",
    "/_internal.json",
    "/-/databases.json",
    "/-/threads.json",
    "/-/versions.json",
    "/-/plugins.json",
    "/-/settings.json",
    "/-/metadata.json",
    "/-/actor.json",
    "/-/allow-debug",
    "/-/messages",
    "/-/permissions",
    "/-/static/../../recs.db",
]
OPEN_PATHS = [
    "/",
    "/recs",
    "/recs.json",
    "/recs/movies.json?_size=5",
    "/recs/movies/1.json",
    "/recs/movies/1",
    "/-/static/app.css",
    "/recs/recommendations_for_user.json?user_id=1",
    "/recs/user_history?user_id=1",
]


def test_the_default_profile_serves_only_canned_queries_the_catalogue_and_static_files(server, db_copy):
    closed = {path: server.get(path).status_code for path in CLOSED_PATHS}
    assert closed == dict.fromkeys(CLOSED_PATHS, 403)
    assert "403 Forbidden: this server answers only the canned queries" in server.get("/-/databases.json").text
    assert {path: server.get(path).status_code for path in OPEN_PATHS} == dict.fromkeys(OPEN_PATHS, 200)
    for name in serving_config.canned_query_names():
        assert server.get(f"/recs/{name}.json").status_code == 200, name
    # the pages list no hidden table, and no page names the file on disk
    shown = {"movies", *serving_config.canned_query_names()}
    for page in ("/", "/recs"):
        text = server.get(page).text
        linked = set(re.findall(r'href="/recs/([A-Za-z_~0-9]+)', text))
        assert "movies" in linked and linked <= shown, (page, linked - shown)
        assert str(db_copy.parent) not in text, page
    listing = server.get("/recs.json").json()
    assert [t["name"] for t in listing["tables"]] == ["movies"] and listing["views"] == []
    # the reporting profile stays open to analysts
    databases, ratings = in_process(db_copy, "reporting", "/-/databases.json", "/recs/ratings.json?user_id=1")
    assert databases.status_code == 200 and ratings.status_code == 200


@pytest.mark.parametrize("profile", ["default", "reporting"])
def test_a_bad_sort_or_through_argument_is_a_one_line_400(server, db_copy, profile):
    paths = ["/recs/movies.json?_sort=nosuchcol", "/recs/movies.json?_sort_desc=zz", "/recs/movies?_sort=nosuchcol"]
    paths += ["/recs/movies.json?_through=zz"]
    if profile == "default":
        answers = [server.get(path) for path in paths]
    else:
        answers = in_process(db_copy, profile, *paths)
    assert [a.status_code for a in answers] == [400] * len(paths), [a.text[:200] for a in answers]
    assert answers[0].json()["error"] == "_sort: no column 'nosuchcol' to sort by"
    assert answers[3].json()["error"].startswith("_through must be JSON like")
    assert "\n" not in answers[0].json()["error"]


def test_damage_found_while_serving_is_a_500_that_says_so_not_a_400(db_copy, tmp_path):
    damaged = copy_db(db_copy, tmp_path / "recs.db")
    with running_server(damaged, tmp_path / "serve.log") as srv:
        assert srv.get("/recs/similar_movies.json", params={"movie_id": "1"}).status_code == 200
        damage_table(damaged, "similar_movies")
        answer = srv.get("/recs/similar_movies.json", params={"movie_id": "1", "_shape": "array"})
        page = srv.get("/recs/similar_movies", params={"movie_id": "1"})
        bad_input = srv.get("/recs/similar_movies.json", params={"movie_id": "x", "_shape": "array"})
    assert answer.status_code == 500, answer.text[:300]
    assert answer.json()["error"].startswith("the server's database is damaged (database disk image is malformed)")
    assert page.status_code == 500 and "this is not a fault of the request" in page.text
    assert bad_input.status_code == 200 and bad_input.json()[0]["error"].startswith("movie_id must be")


# --- the JSON contract ---------------------------------------------------------------


@pytest.mark.parametrize("query", sorted(COLUMNS))
def test_every_canned_query_answers_with_the_documented_shape(server, query):
    rows = server.rows(query, **EXAMPLE_PARAMS.get(query, {}))
    assert rows, query
    assert all(list(row) == COLUMNS[query] for row in rows)
    if "error" in COLUMNS[query]:
        assert all(row["error"] is None for row in rows)
    full = server.get(f"/recs/{query}.json", params=EXAMPLE_PARAMS.get(query, {})).json()
    assert full["ok"] is True and full["columns"] == COLUMNS[query] and full["truncated"] is False


@pytest.mark.parametrize("k", [1, 10, 100])
def test_user_1_gets_k_movies_none_already_rated(server, ro, k):
    rows = server.rows("recommendations_for_user", user_id="1", k=str(k))
    stored = ro.execute(
        "SELECT count(*) FROM recommendations WHERE run_id = ? AND user_id = 1", (published_run_id(ro),)
    ).fetchone()[0]
    assert len(rows) == min(k, stored)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["run_id"] for r in rows} == {published_run_id(ro)}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    rated = {r["movie_id"] for r in server.rows("user_history", user_id="1")}
    assert len(rated) == ro.execute("SELECT count(*) FROM ratings WHERE user_id = 1").fetchone()[0]
    assert not rated & {r["movie_id"] for r in rows}
    assert all(r["title"] and r["genres"] for r in rows)


def test_k_defaults_to_10(server):
    assert len(server.rows("recommendations_for_user", user_id="1")) == 10
    assert len(server.rows("similar_movies", movie_id="1")) == 10
    assert len(server.rows("cold_start", liked="296")) == 10


def test_user_history_is_newest_first(server, ro):
    rows = server.rows("user_history", user_id="1")
    times = [r["rated_at"] for r in rows]
    assert times == sorted(times, reverse=True)
    assert rows[0]["rated_at"] == ro.execute("SELECT max(rated_at) FROM ratings WHERE user_id = 1").fetchone()[0]


def test_similar_movies_come_from_the_published_run(server, ro):
    rows = server.rows("similar_movies", movie_id="1", k="5")
    expected = ro.execute(
        "SELECT similar_movie_id FROM similar_movies WHERE run_id = ? AND movie_id = 1 ORDER BY rank LIMIT 5",
        (published_run_id(ro),),
    ).fetchall()
    assert [r["similar_movie_id"] for r in rows] == [e[0] for e in expected]
    assert 1 not in {r["similar_movie_id"] for r in rows}


def test_cold_start_sums_similarity_over_the_liked_movies_and_excludes_them(server, ro):
    liked = {296, 318, 593}
    rows = server.rows("cold_start", liked="296,318,593", k="10")
    assert len(rows) == 10
    assert not liked & {r["movie_id"] for r in rows}
    # the same answer computed here from the published similar-movies rows
    totals = defaultdict(float)
    for _seed, candidate, score in ro.execute(
        "SELECT movie_id, similar_movie_id, score FROM similar_movies WHERE run_id = ? AND movie_id IN (296, 318, 593)",
        (published_run_id(ro),),
    ):
        if candidate not in liked:
            totals[candidate] += score
    expected = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert [r["movie_id"] for r in rows] == [movie for movie, _ in expected]
    assert [r["score"] for r in rows] == pytest.approx([score for _, score in expected])


def test_cold_start_ignores_duplicates_spaces_and_unknown_ids(server):
    plain = server.rows("cold_start", liked="296,318", k="5")
    assert server.rows("cold_start", liked=" 296 , 318,296, 99999999 ", k="5") == plain


@pytest.mark.parametrize(
    "query, params, message",
    [
        ("cold_start", {"liked": ""}, "liked must be 1 to 100 comma-separated movie ids such as 296,318,593, got ''"),
        (
            "cold_start",
            {"liked": "abc"},
            "liked must be 1 to 100 comma-separated movie ids such as 296,318,593, got 'abc'",
        ),
        ("cold_start", {"liked": "296,,318"}, "liked must be 1 to 100 comma-separated movie ids"),
        ("cold_start", {"liked": "296.5"}, "liked must be 1 to 100 comma-separated movie ids"),
        ("cold_start", {"liked": '"296"'}, "liked must be 1 to 100 comma-separated movie ids"),
        ("cold_start", {"liked": "296); DROP TABLE movies; --"}, "liked must be 1 to 100 comma-separated movie ids"),
        (
            "cold_start",
            {"liked": ",".join(map(str, range(1, 102)))},
            "liked must be 1 to 100 comma-separated movie ids",
        ),
        ("cold_start", {"liked": "296", "k": "0"}, "k must be a whole number from 1 to 100, got '0'"),
        ("recommendations_for_user", {"user_id": "1", "k": "101"}, "k must be a whole number from 1 to 100, got '101'"),
        ("recommendations_for_user", {"user_id": "1", "k": "ten"}, "k must be a whole number from 1 to 100, got 'ten'"),
        ("recommendations_for_user", {"user_id": "abc"}, "user_id must be a whole number, got 'abc'"),
        ("recommendations_for_user", {}, "user_id must be a whole number, got ''"),
        ("recommendations_for_user", {"user_id": "-1"}, "user_id must be a whole number, got '-1'"),
        ("recommendations_for_user", {"user_id": "1 OR 1=1"}, "user_id must be a whole number, got '1 OR 1=1'"),
        ("user_history", {"user_id": "1.0"}, "user_id must be a whole number, got '1.0'"),
        ("similar_movies", {"movie_id": "x"}, "movie_id must be a whole number, got 'x'"),
        ("similar_movies", {"movie_id": "1", "k": "-3"}, "k must be a whole number from 1 to 100, got '-3'"),
    ],
)
def test_malformed_input_gives_one_error_row_not_a_500_nor_an_empty_success(server, query, params, message):
    response = server.get(f"/recs/{query}.json", params={**params, "_shape": "array"})
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 1
    assert rows[0]["error"].startswith(message)
    assert all(value is None for key, value in rows[0].items() if key != "error")


@pytest.mark.parametrize(
    "query, params",
    [
        ("recommendations_for_user", {"user_id": "999999"}),
        ("user_history", {"user_id": "999999"}),
        ("similar_movies", {"movie_id": "99999999"}),
        ("cold_start", {"liked": "99999998,99999999"}),
    ],
)
def test_unknown_user_or_movie_gives_an_empty_list(server, query, params):
    assert server.rows(query, **params) == []
    full = server.get(f"/recs/{query}.json", params=params).json()
    assert full["ok"] is True and full["rows"] == [] and full["error"] is None
    assert full["columns"] == COLUMNS[query]


def test_model_info_is_the_health_check(server, ro):
    [info] = server.rows("model_info")
    run = ro.execute(
        "SELECT run_id, recall_at_10, n_users, n_items FROM model_runs WHERE run_id = ?", (published_run_id(ro),)
    ).fetchone()
    assert (info["run_id"], info["recall_at_10"], info["n_users"], info["n_movies"]) == tuple(run)
    assert info["n_users"] == ro.execute("SELECT count(DISTINCT user_id) FROM ratings").fetchone()[0]
    assert info["published_at"] == ro.execute("SELECT published_at FROM published_run").fetchone()[0]
    assert info["error"] is None
    assert set(json.loads(info["metrics_json"])) >= {"recall_at_10", "ndcg_at_10"}


# --- reports -------------------------------------------------------------------------


def test_reports_agree_with_the_database(server, ro):
    run_id = published_run_id(ro)
    history = server.rows("run_metrics_history")
    assert [r["run_id"] for r in history] == [
        r[0] for r in ro.execute("SELECT run_id FROM model_runs ORDER BY started_at, run_id")
    ]
    assert [r["run_id"] for r in history if r["is_current"]] == [run_id]

    [coverage] = server.rows("catalog_coverage")
    n_recommended = ro.execute(
        "SELECT count(DISTINCT movie_id) FROM recommendations WHERE run_id = ?", (run_id,)
    ).fetchone()[0]
    assert coverage["n_recommended_movies"] == n_recommended
    assert coverage["coverage_of_catalog"] == pytest.approx(n_recommended / coverage["n_catalog_movies"], abs=1e-4)

    top = server.rows("most_recommended_movies")
    assert len(top) == 100
    assert [r["n_users"] for r in top] == sorted((r["n_users"] for r in top), reverse=True)
    assert (
        top[0]["n_users"]
        == ro.execute(
            "SELECT count(*) AS n FROM recommendations WHERE run_id = ? GROUP BY movie_id ORDER BY n DESC LIMIT 1",
            (run_id,),
        ).fetchone()[0]
    )

    genres = server.rows("genre_mix")
    assert sum(g["share_of_recommendations"] for g in genres) == pytest.approx(1, abs=0.01)
    assert sum(g["share_of_ratings"] for g in genres) == pytest.approx(1, abs=0.01)
    drama = next(g for g in genres if g["genre"] == "Drama")
    assert (
        drama["n_ratings"]
        == ro.execute(
            "SELECT count(*) FROM ratings JOIN movies USING (movie_id) WHERE '|' || genres || '|' LIKE '%|Drama|%'"
        ).fetchone()[0]
    )

    buckets = server.rows("users_by_history_length")
    assert sum(b["n_users"] for b in buckets) == ro.execute("SELECT count(DISTINCT user_id) FROM ratings").fetchone()[0]


# --- hardening -----------------------------------------------------------------------


def write_attempts(canned: list[str], tables: list[str]) -> list[tuple[str, str, dict]]:
    """(method, path, request kwargs) of every write or escape attempt."""
    attempts = []
    for sql in WRITE_SQL:
        attempts.append(("GET", "/recs.json", {"params": {"sql": sql}}))
        attempts.append(("GET", "/recs", {"params": {"sql": sql}}))
    attempts += [
        ("GET", "/recs.csv", {"params": {"sql": "SELECT * FROM ratings"}}),
        ("GET", "/recs/ratings.json", {"params": {"_where": "1) OR (1=1"}}),
        ("GET", "/recs.db", {}),
        ("GET", "/_memory.json", {"params": {"sql": "SELECT 1"}}),
        ("GET", "/_internal.json", {"params": {"sql": "SELECT * FROM databases"}}),
    ]
    endpoints = [
        "/",
        "/recs",
        "/recs.json",
        "/-/messages",
        "/-/logout",
        "/-/permissions",
        "/-/actor.json",
        "/-/dashboards",
        "/recs/published_run/1",
    ]
    endpoints += [f"/recs/{name}" for name in canned + tables]
    endpoints += [f"/recs/{name}.json" for name in canned + tables]
    for path in endpoints:
        attempts.append(("POST", path, {"data": {"sql": "DELETE FROM ratings", "user_id": "1"}}))
        attempts.append(("POST", path, {"json": {"sql": "DELETE FROM ratings"}}))
    for path in ("/recs/recommendations_for_user.json", "/recs/ratings"):
        for method in ("PUT", "DELETE", "PATCH"):
            attempts.append((method, path, {}))
    return attempts


def test_write_and_escape_attempts_get_no_2xx_and_change_nothing(server, db_copy, ro):
    import requests

    tables = [r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
    attempts = write_attempts(serving_config.canned_query_names(), tables)
    assert len(attempts) >= 20
    digest, counts = database_digest(db_copy), table_counts(ro)
    answered = []
    for method, path, kwargs in attempts:
        response = requests.request(method, server.url + path, timeout=30, allow_redirects=False, **kwargs)
        answered.append((method, path, str(kwargs)[:60], response.status_code))
    succeeded = [a for a in answered if 200 <= a[3] < 300]
    assert not succeeded
    assert not [a for a in answered if a[3] >= 500]
    assert database_digest(db_copy) == digest
    assert table_counts(ro) == counts
    assert not Path(f"{ATTACK}.db").exists()
    # and the server still answers
    assert len(server.rows("recommendations_for_user", user_id="1", k="3")) == 3


def test_parameters_are_bound_never_spliced_into_the_sql(server, db_copy):
    digest = database_digest(db_copy)
    for value in ["1; DELETE FROM ratings", "1'); DELETE FROM ratings; --", "1 UNION SELECT * FROM model_runs"]:
        rows = server.rows("recommendations_for_user", user_id=value)
        assert len(rows) == 1 and rows[0]["error"].startswith("user_id must be a whole number")
        rows = server.rows("cold_start", liked=value)
        assert len(rows) == 1 and rows[0]["error"].startswith("liked must be")
    assert database_digest(db_copy) == digest


def test_readme_examples_are_real_responses(server):
    """Every example URL of the README's HTTP section and of docs/serving.md answers; its
    response's keys match."""
    front_door = doc_section("README.md", "## Get user 1's list over HTTP")
    manual = doc_section("docs/serving.md", "## Serving with datasette")
    front_urls = re.findall(r"http://127\.0\.0\.1:8001(/recs/[^\s`'-][^\s`']*)", front_door)
    urls = re.findall(r"http://127\.0\.0\.1:8001(/recs/[^\s`]+)", manual)
    assert len(front_urls) >= 4 and len(urls) >= 6
    urls += front_urls
    for path in urls:
        response = server.get(path)
        assert response.status_code == 200, path
        query = path.split("/")[2].split(".")[0]
        if "_shape=array" in path:
            assert all(list(row) == COLUMNS[query] for row in response.json()), path


def test_before_any_run_is_published_model_info_says_so(tmp_path):
    from recjobs.storage import db

    db.engine_for(tmp_path / "empty.db")  # the schema, no run
    conn = sqlite3.connect(f"file:{tmp_path / 'empty.db'}?mode=ro", uri=True)
    try:
        [info] = conn.execute((SQL_DIR / "model_info.sql").read_text()).fetchall()
        assert info[0] is None and info[-1] == "no published run yet; run `recjobs run`"
        sql = (SQL_DIR / "recommendations_for_user.sql").read_text()
        assert conn.execute(sql, {"user_id": "1", "k": ""}).fetchall() == []
    finally:
        conn.close()


def test_the_database_is_served_at_recs_whatever_its_file_is_called(db_copy, tmp_path):
    import asyncio

    other = copy_db(db_copy, tmp_path / "nightly-2026.db")
    ds = serve.build_datasette(other.resolve())
    assert list(name for name in ds.databases if name != "_internal") == ["recs"]
    assert ds.databases["recs"].is_mutable

    async def ask():
        return (
            await ds.client.get("/recs/model_info.json?_shape=array"),
            await ds.client.post("/recs/model_info.json", data={}),
        )

    info, post = asyncio.run(ask())
    assert info.status_code == 200 and info.json()[0]["error"] is None
    assert post.status_code == 405


def test_oversized_and_many_parameter_requests_are_answered_at_once(server):
    started = time.monotonic()
    huge = server.get("/recs/recommendations_for_user.json?user_id=1&" + "&".join(f"p{i}={i}" for i in range(3000)))
    crowded = server.get("/recs/recommendations_for_user.json?user_id=1&" + "&".join(["p=1"] * 200))
    long = server.get("/recs/recommendations_for_user.json", params={"user_id": "1", "x": "y" * 10_000})
    assert time.monotonic() - started < 2  # datasette alone took 17-22 s over 3,000 parameters
    assert huge.status_code == 414 and long.status_code == 414 and "expected at most 8192" in long.text
    assert crowded.status_code == 400 and "201 parameters; expected at most 50" in crowded.text
    assert server.rows("recommendations_for_user", user_id="1", k="3")[0]["rank"] == 1  # normal requests pass


@pytest.mark.parametrize(
    "query, name",
    [("recommendations_for_user", "user_id"), ("similar_movies", "movie_id"), ("user_history", "user_id")],
)
def test_a_nul_byte_does_not_pass_the_id_check(server, query, name):
    rows = server.rows(query, **{name: "1\x00"})
    assert len(rows) == 1 and rows[0]["error"].startswith(f"{name} must be a whole number"), rows[:1]
    assert server.rows(query, **{name: "1"})[0].get("error") is None


# --- several processes, health, ETag, the front page ---------------------------------


def test_serve_runs_the_configured_number_of_server_processes(server):
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    workers = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2, children  # tests.support.running_server asks for 2
    assert server.rows("recommendations_for_user", user_id="1", k="3")[0]["rank"] == 1


def test_health_says_which_run_is_published_how_old_and_for_how_many_users(server, ro):
    response = server.get("/-/health")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    health = response.json()
    run_id, published_at = ro.execute("SELECT run_id, published_at FROM published_run").fetchone()
    assert health["ok"] is True and health["run_id"] == run_id and health["published_at"] == published_at
    assert 0 <= health["age_hours"] < 24 * 365 and health["n_users"] == 610


def test_health_is_503_when_nothing_is_published(tmp_path):
    from recjobs.storage import db

    db.engine_for(tmp_path / "empty.db")
    [health] = in_process(tmp_path / "empty.db", "default", "/-/health")
    assert health.status_code == 503
    assert health.json() == {"ok": False, "run_id": None, "error": "no published run yet; run `recjobs run`"}


def test_run_keyed_answers_carry_one_etag_per_published_run(server):
    first = server.get("/recs/recommendations_for_user.json", params={"user_id": "1", "k": "3"})
    other = server.get("/recs/similar_movies.json", params={"movie_id": "1"})
    etag = first.headers["etag"]
    assert etag == other.headers["etag"] and first.headers["cache-control"] == "no-cache"
    again = server.get("/recs/user_history.json", params={"user_id": "1"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    stale = server.get("/recs/recommendations_for_user.json", params={"user_id": "1"}, headers={"If-None-Match": '"x"'})
    assert stale.status_code == 200 and stale.json()["rows"]
    # answers that change without a publish (run history, metrics added later) carry none
    assert "etag" not in server.get("/recs/model_info.json").headers
    assert "etag" not in server.get("/recs/run_metrics_history.json").headers


def lookup_requests(ro) -> list[tuple[str, str]]:
    """(query, query string) of lookups: known, unknown and the most active users (more rows
    than max_returned_rows), edge and malformed parameters, percent-encoding, missing ones."""
    busiest = ro.execute("SELECT user_id FROM ratings GROUP BY user_id ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    users = [1, 2, 3, 610, busiest, 999999]
    asks = [("recommendations_for_user", f"user_id={u}&k={k}") for u in users for k in (1, 10, 100)]
    asks += [("user_history", f"user_id={u}") for u in users]
    asks += [("similar_movies", f"movie_id={m}&k={k}") for m in (1, 296, 318, 99999999) for k in ("", "7")]
    asks += [("cold_start", "liked=296,318,593&k=10"), ("cold_start", "liked=1"), ("cold_start", "liked=x")]
    asks += [
        ("recommendations_for_user", "user_id=%31&k=%33"),
        ("recommendations_for_user", "k=5"),
        ("recommendations_for_user", ""),
        ("recommendations_for_user", "user_id=1&k=0"),
        ("recommendations_for_user", "user_id=1&k=101"),
        ("recommendations_for_user", "user_id=%C3%A9"),
        ("recommendations_for_user", "user_id=1%20OR%201=1"),
        ("recommendations_for_user", "user_id=1&user_id=2"),
        ("similar_movies", "movie_id=1&k=-3"),
        ("user_history", "user_id=1.0"),
    ]
    return asks


def test_lookups_the_plugin_answers_are_datasettes_own_bytes_and_headers(server, db_copy, ro):
    from recjobs.serving import datasette_plugin

    ds = serve.build_datasette(db_copy.resolve())
    answered_by_plugin = 0
    for query, args in lookup_requests(ro):
        prefix = f"{args}&" if args else ""
        mine = server.get(f"/recs/{query}.json?{prefix}_shape=array")
        # an argument the plugin does not take (and datasette ignores here) leaves it to datasette
        theirs = server.get(f"/recs/{query}.json?{prefix}_shape=array&_json_infinity=0")
        assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content), (query, args)
        for header in ("content-type", "referrer-policy", "vary", "etag", "cache-control"):
            assert mine.headers.get(header) == theirs.headers.get(header), (query, args, header)
        in_process = datasette_plugin.lookup_answer(ds, query, f"{prefix}_shape=array".encode())
        if "user_id=1&user_id=2" in args:
            assert in_process is None  # a parameter given twice is datasette's to answer
        else:
            assert in_process == mine.content, (query, args)
            answered_by_plugin += 1
        assert datasette_plugin.lookup_answer(ds, query, f"{prefix}_shape=array&_json_infinity=0".encode()) is None
    assert answered_by_plugin >= 40
    for other_shape in (b"user_id=1", b"user_id=1&_shape=objects", b"user_id=1&_shape=arrays&k=3"):
        assert datasette_plugin.lookup_answer(ds, "recommendations_for_user", other_shape) is None
    assert datasette_plugin.lookup_answer(ds, "model_info", b"_shape=array") is None  # a lookup only


def test_lookups_the_plugin_answers_keep_the_read_only_guards_and_datasettes_time_limit(db_copy, monkeypatch):
    from recjobs.serving import datasette_plugin

    ds = serve.build_datasette(db_copy.resolve())
    conn = datasette_plugin.own_connection(ds)
    assert conn.execute("PRAGMA query_only").fetchone() == (1,)
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute(f"ATTACH DATABASE '{db_copy}' AS other")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM movies")
    # a lookup over datasette's time limit is interrupted and left to datasette (which says so)
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n WHERE :user_id"
    lookups = {"recommendations_for_user": (endless, frozenset({"user_id"}))}
    monkeypatch.setattr(ds, "_recjobs_lookups", lookups, raising=False)
    started = time.perf_counter()
    assert datasette_plugin.lookup_answer(ds, "recommendations_for_user", b"user_id=1&_shape=array") is None
    assert time.perf_counter() - started < ds.setting("sql_time_limit_ms") / 1000 + 1


def test_the_front_page_lists_every_canned_query_with_a_working_example(server):
    import html

    dom = chromium("--dump-dom", server.url + "/")
    links = [html.unescape(link) for link in re.findall(r'<a href="(/[^"]+)"', dom)]
    for name in serving_config.canned_query_names():
        page = [link for link in links if link.split("?")[0] == f"/recs/{name}"]
        as_json = [link for link in links if link.split("?")[0] == f"/recs/{name}.json"]
        assert page and as_json, name
        assert server.get(page[0]).status_code == 200, page[0]
        rows = server.get(as_json[0]).json()
        assert rows and all(row.get("error") is None for row in rows), (as_json[0], rows[:1])
    assert "/-/health" in links
    shots = REPO / "artifacts" / "test-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "front-page.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", server.url + "/")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
