"""The server's cold-start route, /recs/-/cold_start.json: the job's answer over HTTP, from a
real multi-process `recjobs serve` on the ml-latest-small database; read-only, one run per
answer, reloaded on a publish without a restart."""

from __future__ import annotations

import json
import os
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

from recjobs.jobs import evaluate, load, precompute, split, train
from recjobs.storage import publish
from support import copy_db, database_digest, doc_section, running_server

ROUTE = "/recs/-/cold_start.json"


@pytest.fixture(scope="module")
def served(published_settings, tmp_path_factory):
    """The published ml-latest-small database copied for the server; the run's artifacts shared."""
    return published_settings.replace(db=copy_db(published_settings.db, tmp_path_factory.mktemp("cold") / "recs.db"))


@pytest.fixture(scope="module")
def server(served):
    with running_server(served.db, served.db.parent / "serve.log", artifacts=served.artifacts) as srv:
        yield srv


def command_answer(settings, liked: str, k: int, tmp_path: Path) -> dict:
    """`recjobs cold-start --json` on a copy of the database (the command stores its request)."""
    db = copy_db(settings.db, tmp_path / f"command-{abs(hash(liked))}.db")
    done = subprocess.run(
        [sys.executable, "-m", "recjobs", "-q", "cold-start", "--json", "--db", str(db)]
        + ["--artifacts", str(settings.artifacts), "--liked", liked, "--k", str(k)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def known_movies(db: Path, n: int) -> list[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT movie_id FROM similar_movies WHERE run_id = (SELECT run_id FROM published_run) "
                "GROUP BY movie_id ORDER BY movie_id LIMIT ?",
                (n,),
            )
        ]


@pytest.mark.parametrize(
    "case, method",
    [
        ("three", "blend"),
        ("one", "blend"),
        ("with unknown", "blend"),
        ("many", "als_fold_in"),
        ("unknown", "popularity"),
    ],
)
def test_the_http_answer_is_the_commands_answer(server, served, tmp_path, case, method):
    liked = {
        "three": "296,318,593",
        "one": "1",
        "with unknown": "296, 2147483000,318",
        "many": ",".join(map(str, known_movies(served.db, 45))),
        "unknown": "2147483000",
    }[case]
    response = server.get(ROUTE, params={"liked": liked, "k": "7"})
    assert response.status_code == 200, response.text
    over_http = response.json()
    command = command_answer(served, liked, 7, tmp_path)
    assert over_http["ok"] is True and over_http["method"] == command["method"] == method
    assert over_http["run_id"] == command["run_id"] == "first"
    assert over_http["liked"] == command["liked"] and over_http["unknown_ids"] == command["unknown_ids"]
    assert over_http["rows"] == command["recommendations"] and len(over_http["rows"]) == 7
    assert over_http["columns"] == ["movie_id", "title", "genres", "year", "score", "because_movie_id", "because_title"]
    assert not {row["movie_id"] for row in over_http["rows"]} & set(over_http["liked"])  # liked never recommended
    array = server.get(ROUTE, params={"liked": liked, "k": "7", "_shape": "array"})
    assert array.json() == over_http["rows"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "liked: no movie ids given; expected 1 to 100 ids, e.g. ?liked=296,318,593&k=10"),
        ({"liked": ""}, "liked: no movie ids given"),
        ({"liked": "296,abc"}, "liked: 'abc' is not an integer movie id; expected integers"),
        ({"liked": "1\x00"}, "liked: '1\\x00' is not an integer movie id"),
        ({"liked": "0"}, "liked: 0 is not a valid movie id; expected 1 to 2147483647"),
        ({"liked": "9" * 5000}, "liked: a 5000-digit number is not a valid movie id"),
        ({"liked": ",".join(map(str, range(1, 102)))}, "liked: 101 distinct movie ids given; at most 100"),
        ({"liked": "1", "k": "0"}, "k: 0 is out of range; expected an integer from 1 to 100"),
        ({"liked": "1", "k": "abc"}, "k: 'abc' is out of range"),
        ({"liked": "1", "k": "101"}, "k: 101 is out of range"),
        ({"liked": ["1", "2"]}, "liked: given 2 times; expected once"),
        ({"liked": "1", "_shape": "arrays"}, "_shape: 'arrays' is not offered here; expected objects or array"),
    ],
)
def test_bad_input_is_a_one_line_400(server, params, message):
    response = server.get(ROUTE, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["ok"] is False and body["status"] == 400
    assert body["error"].startswith(message) and "\n" not in body["error"] and len(body["error"]) < 300


def test_the_route_writes_nothing_and_refuses_writes(server, served):
    before = database_digest(served.db)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = requests.request(method, server.url + ROUTE + "?liked=296,318,593", timeout=30)
        assert response.status_code == 405 and "read-only" in response.text
    for liked in ("296,318,593", "1,2,3", "2147483000"):
        assert server.get(ROUTE, params={"liked": liked}).status_code == 200
    assert database_digest(served.db) == before  # nothing stored: the server never writes
    with sqlite3.connect(f"file:{served.db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM cold_start_requests").fetchone()[0] == 0


def test_the_answer_carries_the_published_runs_etag(server):
    answer = server.get(ROUTE, params={"liked": "296,318,593"})
    known_user = server.get("/recs/recommendations_for_user.json", params={"user_id": "1"})
    assert answer.headers["etag"] == known_user.headers["etag"] and answer.headers["cache-control"] == "no-cache"
    again = server.get(ROUTE, params={"liked": "296,318,593"}, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_front_page_links_to_a_working_example(server):
    page = server.get("/").text
    assert '/recs/-/cold_start.json?liked=296,318,593&amp;k=10"' in page
    assert server.get(ROUTE + "?liked=296,318,593&k=10").json()["rows"]


def read_answers(url: str, movies: list[int], stop: threading.Event, answers: list, seed: int) -> None:
    rng, session = random.Random(seed), requests.Session()
    while not stop.is_set():
        liked = ",".join(map(str, rng.sample(movies, rng.randint(1, 5))))
        response = session.get(url + ROUTE, params={"liked": liked, "k": "10"}, timeout=30)
        answers.append((liked, response.status_code, response.json()))


def test_a_publish_during_requests_gives_answers_each_from_one_run_without_a_restart(published_settings, tmp_path):
    """Readers ask while run `second` is published over `first` and the pointer is flipped back
    and forth; every answer must equal what the cold-start job computes from its run alone."""
    from recjobs.jobs import cold_start

    served = published_settings.replace(db=copy_db(published_settings.db, tmp_path / "recs.db"))
    second = served.replace(
        artifacts=tmp_path / "artifacts", random_seed=7, factors=16, iterations=5, gate_tolerance=0.5
    )  # a quicker, different model that still passes the gate
    for step in (load.load, split.split, train.train, evaluate.evaluate):
        step(second, "second")
    movies = known_movies(served.db, 300)
    answers: list = []
    stop = threading.Event()
    with running_server(served.db, tmp_path / "serve.log", artifacts=served.artifacts) as server:
        readers = [
            threading.Thread(target=read_answers, args=(server.url, movies, stop, answers, seed), daemon=True)
            for seed in range(4)
        ]

        def wait_for(run_id: str) -> None:
            seen, deadline = len(answers), time.monotonic() + 60
            while not any(a[2].get("run_id") == run_id for a in answers[seen:]):
                assert time.monotonic() < deadline, f"no answer from {run_id} within 60 s"
                time.sleep(0.05)

        for reader in readers:
            reader.start()
        try:
            wait_for("first")
            assert precompute.precompute(second, "second").status == "published"  # readers keep asking
            wait_for("second")
            for target in ("first", "second"):
                publish.rollback(served, target)
                wait_for(target)
        finally:
            stop.set()
            for reader in readers:
                reader.join(timeout=30)
    assert all(status == 200 for _, status, _ in answers), {s for _, s, _ in answers}
    assert {a[2]["run_id"] for a in answers} == {"first", "second"}
    # each answer against what its run alone gives (both runs' bundles, read directly)
    bundles = {"first": served.artifacts / "first", "second": second.artifacts / "second"}
    for liked, _, body in answers[:: max(1, len(answers) // 400)]:
        expected = answer_of_run(bundles[body["run_id"]], cold_start.parse_liked(liked), 10)
        assert [(r["movie_id"], r["score"]) for r in body["rows"]] == expected, (liked, body["run_id"])
    assert answer_of_run(bundles["first"], (296, 318, 593), 10) != answer_of_run(bundles["second"], (296, 318, 593), 10)


def answer_of_run(run_dir: Path, liked: tuple[int, ...], k: int) -> list[tuple[int, float]]:
    """(movie id, score) of a run's cold-start answer, from its bundle alone."""
    from recjobs.method import bundle, scoring

    run = bundle.read_bundle(run_dir.name, run_dir)
    rows, _ = run.rows_of(liked)
    _, scores = bundle.scores_for(run, rows)
    best = scoring.top_k(scores, rows, k)
    return [(int(m), round(float(s), 6)) for m, s in zip(run.movie_ids[best], scores[best], strict=True)]


def test_the_readme_examples_of_the_route_are_real_answers(server):
    """Each GET example in the docs' "Over HTTP" section and in the README, against the same run ("first" on
    ml-latest-small, default settings): the status, the keys, the movies and the errors."""
    example = r"^GET http://127\.0\.0\.1:8001(/recs/-/cold_start\.json\S*)\n(?:(\d{3}) )?(.+)$"
    examples = []
    for page, heading in (
        ("docs/cold-start.md", "### Over HTTP"),
        ("README.md", "### A new user: the cold-start route"),
    ):
        found = re.findall(example, doc_section(page, heading), re.M)
        assert len(found) >= 2, page
        examples += found
    for path, status, shown in examples:
        response, documented = server.get(path), json.loads(shown)
        assert response.status_code == int(status or 200), path
        answer = response.json()
        assert list(answer) == list(documented), path
        if response.status_code != 200:
            assert answer == documented, path
            continue
        assert [r["movie_id"] for r in answer["rows"]] == [r["movie_id"] for r in documented["rows"]], path
        assert [r["score"] for r in answer["rows"]] == pytest.approx([r["score"] for r in documented["rows"]], abs=1e-3)
        assert {k: v for k, v in answer.items() if k not in ("rows", "query_ms")} == {
            k: v for k, v in documented.items() if k not in ("rows", "query_ms")
        }


def test_nothing_published_is_a_503_and_missing_run_files_a_503_that_names_no_path(served, tmp_path):
    import asyncio
    import shutil

    from recjobs.serving import serve
    from recjobs.storage import db

    def ask(database: Path, artifacts: Path):
        ds = serve.build_datasette(database.resolve(), "default", artifacts)
        return asyncio.run(ds.client.get(ROUTE + "?liked=296,318,593"))

    db.engine_for(tmp_path / "empty.db")
    nothing = ask(tmp_path / "empty.db", tmp_path)
    assert nothing.status_code == 503
    assert nothing.json()["error"] == "recs: no published run to answer from; run `recjobs run` first"
    # the run's files gone (its folder moved away, the recorded one too): one line, no server path
    moved = copy_db(served.db, tmp_path / "moved.db")
    with sqlite3.connect(moved) as conn:
        conn.execute("UPDATE model_runs SET artifacts_dir = ?", (str(tmp_path / "gone"),))
    (tmp_path / "artifacts").mkdir()
    shutil.copytree(served.artifacts / "first", tmp_path / "artifacts" / "first")
    shutil.rmtree(tmp_path / "artifacts" / "first" / "cold_start")
    (tmp_path / "artifacts" / "first" / "ratings.npz").unlink()  # the bundle cannot be written again
    broken = ask(moved, tmp_path / "artifacts")
    assert broken.status_code == 503 and str(tmp_path) not in broken.text
    assert broken.json()["error"].startswith("cold start is unavailable: the published run's files cannot be read")
