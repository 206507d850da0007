"""recjobs serve while a new run is published, then the --reporting profile over the
two-run database: the time limit, SQL that reaches SQLite, and the dashboard in headless
Chromium (screenshot saved to artifacts/test-screenshots/)."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from recjobs.jobs.evaluate import evaluate
from recjobs.jobs.load import load
from recjobs.jobs.split import split
from recjobs.jobs.train import train
from recjobs.serving import config as serving_config
from support import WRITE_SQL, chromium, copy_db, database_digest, running_server

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "test-screenshots"
READERS = 8
K = 10


def read_recommendations(url: str, user_ids: list[int], stop: threading.Event, out: list, seed: int):
    rng = random.Random(seed)
    session = requests.Session()
    while not stop.is_set():
        user = rng.choice(user_ids)
        started = time.monotonic()
        try:
            response = session.get(
                f"{url}/recs/recommendations_for_user.json",
                params={"user_id": user, "k": K, "_shape": "array"},
                timeout=30,
            )
            rows = response.json() if response.status_code == 200 else None
            out.append((started, time.monotonic(), user, response.status_code, rows))
        except Exception as e:  # noqa: BLE001 - every failure is counted as an error
            out.append((started, time.monotonic(), user, repr(e), None))


def watch_the_flip(db: Path, server, run_id: str, out: dict, give_up: threading.Event):
    """Note when the pointer flips to run_id in the file, then how long until the server serves it."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        while not give_up.is_set():
            if conn.execute("SELECT run_id FROM published_run").fetchone()[0] == run_id:
                out["flipped_at"] = time.monotonic()
                break
            time.sleep(0.005)
    finally:
        conn.close()
    while not give_up.is_set() and "served_after" not in out:
        if server.rows("model_info")[0]["run_id"] == run_id:
            out["served_after"] = time.monotonic() - out["flipped_at"]


@pytest.fixture(scope="module")
def published_under_load(published_settings, tmp_path_factory):
    """Publish run 'second' (`recjobs precompute` in another process) while 8 threads read
    recommendations_for_user; the measurements."""
    root = tmp_path_factory.mktemp("serve-publish")
    db = copy_db(published_settings.db, root / "recs.db")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    first = conn.execute("SELECT run_id FROM published_run").fetchone()[0]
    user_ids = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM recommendations WHERE run_id = ?", (first,))]
    conn.close()
    # the new run's steps before publishing; precompute (writes its rows and flips the
    # pointer) runs under load, in another process as the nightly job does
    # a quicker, different model that still passes the gate (publishing is what is measured)
    quick = {"factors": 16, "iterations": 5, "gate_tolerance": 0.5}
    settings = published_settings.replace(db=db, artifacts=root / "artifacts", **quick)
    for step in (load, split, train, evaluate):
        step(settings, "second")
    flip, results, stop = {}, [], threading.Event()
    with running_server(db, root / "serve.log") as server:
        path = f"/recs/recommendations_for_user.json?user_id={user_ids[0]}&k={K}&_shape=array"
        before = server.get(path)
        flip["etag_before"] = before.headers.get("etag")
        flip["revalidated_before"] = server.get(path, headers={"If-None-Match": flip["etag_before"]})
        threads = [
            threading.Thread(target=read_recommendations, args=(server.url, user_ids, stop, results, seed), daemon=True)
            for seed in range(READERS)
        ]
        threads.append(threading.Thread(target=watch_the_flip, args=(db, server, "second", flip, stop), daemon=True))
        try:
            for t in threads:
                t.start()
            time.sleep(1.0)
            job = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "recjobs",
                    "-q",
                    "precompute",
                    "--run-id",
                    "second",
                    "--data-dir",
                    str(settings.data_dir),
                    "--db",
                    str(db),
                    "--artifacts",
                    str(settings.artifacts),
                    "--json",
                    *(f"--{name.replace('_', '-')}={value}" for name, value in quick.items()),
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        flip["revalidated_after"] = server.get(path, headers={"If-None-Match": flip["etag_before"]})
    assert job.returncode == 0, job.stderr
    return {"db": db, "first": first, "status": json.loads(job.stdout)["status"], "results": results, **flip}


def test_publishing_while_8_clients_read_gives_no_errors_and_no_mixed_runs(published_under_load):
    m = published_under_load
    assert m["status"] == "published"
    results = m["results"]
    assert len(results) > 100
    errors = [r for r in results if r[3] != 200]
    assert errors == []
    runs_seen = set()
    for _started, _finished, user, _status, rows in results:
        assert len(rows) == K, (user, rows[:1])
        run_ids = {row["run_id"] for row in rows}
        assert len(run_ids) == 1, (user, run_ids)  # one response, one run
        assert [row["rank"] for row in rows] == list(range(1, K + 1))
        assert all(row["user_id"] == user and row["error"] is None for row in rows)
        runs_seen |= run_ids
    assert runs_seen == {m["first"], "second"}
    # requests sent after the pointer flipped in the file are answered from the new run
    late = [r for r in results if r[0] > m["flipped_at"]]
    assert late and all(r[4][0]["run_id"] == "second" for r in late)


def test_the_new_run_is_served_within_1s_after_publishing(published_under_load):
    m = published_under_load
    print(f"{len(m['results'])} responses while publishing; new run served {m.get('served_after')} s after the flip")
    assert published_under_load.get("served_after") is not None
    assert published_under_load["served_after"] <= 1.0


def test_an_etag_gets_304_until_the_next_publish_and_never_a_stale_answer(published_under_load):
    m = published_under_load
    assert m["etag_before"] and m["etag_before"].startswith('"')
    before = m["revalidated_before"]
    assert before.status_code == 304 and before.content == b"" and before.headers["etag"] == m["etag_before"]
    after = m["revalidated_after"]  # the same If-None-Match, after 'second' was published
    assert after.status_code == 200 and after.headers["etag"] not in ("", m["etag_before"])
    assert {row["run_id"] for row in after.json()} == {"second"}


# --- the reporting profile over the two-run database ---------------------------------


@pytest.fixture(scope="module")
def reporting(published_under_load):
    db = published_under_load["db"]
    with running_server(db, db.parent / "serve-reporting.log", reporting=True) as server:
        yield server


def test_reporting_profile_runs_arbitrary_select_sql(reporting):
    response = reporting.get(
        "/recs.json", params={"sql": "SELECT run_id, status FROM model_runs ORDER BY run_id", "_shape": "array"}
    )
    assert response.status_code == 200
    assert [r["run_id"] for r in response.json()] == ["first", "second"]
    assert reporting.get("/-/settings.json").json()["default_allow_sql"] is True


def test_reporting_sql_may_not_call_functions_that_reach_outside_sql(reporting):
    for call in ("fts3_tokenizer('simple')", "load_extension('/tmp/x.so')"):
        response = reporting.get("/recs.json", params={"sql": f"SELECT {call} AS x", "_shape": "array"})
        assert response.status_code == 400 and "not authorized" in response.text, (call, response.text[:200])
    ok = reporting.get("/recs.json", params={"sql": "SELECT upper('a') AS x", "_shape": "array"})
    assert ok.json() == [{"x": "A"}]  # other functions still work


def test_reporting_profile_sql_that_writes_is_refused_by_the_read_only_connection(reporting, published_under_load):
    db = published_under_load["db"]
    digest = database_digest(db)
    answers = {}
    for sql in WRITE_SQL:
        if sql == "SELECT * FROM movies":
            continue
        answers[sql] = reporting.get("/recs.json", params={"sql": sql})
    assert {sql: r.status_code for sql, r in answers.items() if r.status_code != 400} == {}
    assert answers["WITH x AS (SELECT 1) DELETE FROM ratings"].json()["error"] == "attempt to write a readonly database"
    assert database_digest(db) == digest


def test_a_query_that_runs_too_long_is_stopped_within_the_time_limit(reporting):
    limit = serving_config.datasette_config("reporting").settings["sql_time_limit_ms"] / 1000
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    started = time.monotonic()
    response = reporting.get("/recs.json", params={"sql": endless})
    elapsed = time.monotonic() - started
    assert response.status_code == 400
    assert response.json()["title"] == "SQL Interrupted"
    assert limit * 0.9 <= elapsed <= limit + 0.5
    assert reporting.get("/recs/model_info.json").status_code == 200  # and the server goes on


def test_dashboard_renders_the_metrics_chart_in_headless_chromium(reporting):
    url = reporting.url + "/-/dashboards/run-metrics"
    dom = chromium("--dump-dom", url)
    # the line chart, drawn as SVG by vega-lite: one line per metric, one point per run and metric
    chart = dom.split('id="chart-metrics-over-time"', 1)[1].split('id="card-', 1)[0]
    assert chart.count('class="mark-line role-mark') >= 1
    lines = re.findall(r'<path[^>]*aria-roledescription="line mark"[^>]*d="(M[^"]+)"', chart)
    assert len(lines) == 4 and all("L" in d for d in lines)  # 4 metrics, each a line through 2 runs
    for legend in ("ALS Recall@10", "ALS NDCG@10", "popularity Recall@10", "popularity NDCG@10"):
        assert legend in chart
    # the metric card shows the published run's Recall@10 as stored
    [info] = reporting.rows("model_info")
    card = dom.split('id="chart-published-recall"', 1)[1].split('id="card-', 1)[0]
    assert f"{info['recall_at_10']:.4f}" in card
    # every script and stylesheet comes from the server itself (no CDN: this machine is offline)
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', dom)
    assert sources and all(s.startswith("/") or s.startswith(reporting.url) for s in sources), sources

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "dashboard-run-metrics.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", url)
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
