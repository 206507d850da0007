"""The on-demand cold-start job: answers, input checks, storage, lightness, consistency."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recjobs.cli import cli
from recjobs.errors import ConfigError, StateError
from recjobs.jobs import cold_start as cs
from recjobs.jobs import evaluate, load, precompute, split, train
from recjobs.method import bundle as cb
from recjobs.method import model, scoring
from recjobs.settings import Settings
from recjobs.storage import db, publish
from support import copy_db

REPO = Path(__file__).resolve().parent.parent
SEEDS = [296, 318, 593]


@pytest.fixture
def served(published_settings, tmp_path) -> Settings:
    """A private copy of the published database; the run's artifacts are shared (read-only)."""
    return published_settings.replace(db=copy_db(published_settings.db, tmp_path / "recs.db"))


def count_rows(db_path: Path) -> tuple[int, int]:
    with sqlite3.connect(db_path) as conn:
        return (
            conn.execute("SELECT count(*) FROM cold_start_requests").fetchone()[0],
            conn.execute("SELECT count(*) FROM cold_start_recommendations").fetchone()[0],
        )


def served_bundle(settings: Settings) -> cb.Bundle:
    return cb.read_bundle("first", Path(settings.artifacts) / "first")


def positives_of(settings: Settings, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    ratings = np.load(Path(settings.artifacts) / "first" / "ratings.npz")
    mine = ratings["user_id"] == user_id
    return ratings["movie_id"][mine & (ratings["rating"] >= settings.positive_threshold)], ratings["movie_id"][mine]


# ---- answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "liked, method",
    [
        ([296], "blend"),
        (SEEDS, "blend"),
        ([318, 356, 296, 593, 2571, 260, 2959, 527, 1196, 110], "blend"),  # the 10 most popular
        ([999_999_999], "popularity"),
    ],
)
def test_answer_never_contains_a_seed_and_is_stored(served, liked, method):
    result = cs.cold_start(served, liked, k=20)
    ids = [movie.movie_id for movie in result.recommendations]
    assert result.method == method
    assert len(ids) == 20 and len(set(ids)) == 20
    assert not set(ids) & set(liked)
    assert all(movie.title and movie.genres for movie in result.recommendations)
    scores = [movie.score for movie in result.recommendations]
    assert scores == sorted(scores, reverse=True)
    with sqlite3.connect(served.db) as conn:
        row = conn.execute(
            "SELECT run_id, liked_json, unknown_json, k, method, answer_seconds "
            "FROM cold_start_requests WHERE request_id = ?",
            (result.request_id,),
        ).fetchone()
        stored = conn.execute(
            "SELECT movie_id FROM cold_start_recommendations WHERE request_id = ? ORDER BY rank", (result.request_id,)
        ).fetchall()
    assert row[:5] == ("first", json.dumps(liked), json.dumps(list(result.unknown_ids)), 20, method)
    assert 0 < row[5] < 5
    assert [r[0] for r in stored] == ids


def test_no_seed_even_when_every_other_movie_is_asked_for(tiny_settings):
    for step in (load.load, split.split, train.train):
        step(tiny_settings, "tiny")
    with db.transaction(tiny_settings.db) as conn:
        publish.flip(conn, "tiny")
    result = cs.cold_start(tiny_settings, [1, 2], k=100)
    ids = [movie.movie_id for movie in result.recommendations]
    assert sorted(ids) == [3, 4, 5, 6]  # the six movies minus the two seeds; k is capped by what is left


def test_many_known_liked_movies_use_the_plain_fold_in(served):
    liked = [int(m) for m in served_bundle(served).movie_ids[: cb.BLEND_MAX_KNOWN + 1]]
    assert cs.cold_start(served, liked).method == "als_fold_in"


def test_unknown_ids_are_reported_and_duplicates_collapse(served):
    result = cs.cold_start(served, [296, 999_999_999, 296, 318, 888_888_888, 318], k=5)
    assert result.liked == (296, 999_999_999, 318, 888_888_888)
    assert result.unknown_ids == (999_999_999, 888_888_888)
    assert result.method == "blend"
    with sqlite3.connect(served.db) as conn:
        liked_json, unknown_json = conn.execute(
            "SELECT liked_json, unknown_json FROM cold_start_requests WHERE request_id = ?", (result.request_id,)
        ).fetchone()
    assert json.loads(liked_json) == [296, 999_999_999, 318, 888_888_888]
    assert json.loads(unknown_json) == [999_999_999, 888_888_888]


def known_users(settings: Settings):
    """The published run's users as the pipeline weighted them (recency, confidence, profile)."""
    ratings = dict(np.load(Path(settings.artifacts) / "first" / "ratings.npz"))
    factors = model.Factors.read(Path(settings.artifacts) / "first" / "model_full.npz")
    everything = model.interactions(
        ratings, np.ones(len(ratings["rating"]), bool), factors.user_ids, factors.movie_ids, settings
    )
    return factors.user_ids, everything


def test_fold_in_equals_implicit_recalculate_user(published_settings):
    from implicit.cpu.als import AlternatingLeastSquares

    bundle = served_bundle(published_settings)
    als = AlternatingLeastSquares(factors=bundle.item_factors.shape[1], regularization=bundle.regularization, alpha=1.0)
    als.item_factors = np.array(bundle.item_factors)  # a writable copy of the memory map
    _, data = known_users(published_settings)
    for row in (0, 1, 413):
        user_items = data.confidence[row]  # recency-weighted confidences, as trained
        expected = als.recalculate_user(0, user_items)
        ours = cb.fold_in(bundle.item_factors, bundle.gram, user_items.indices, user_items.data, bundle.regularization)
        np.testing.assert_allclose(ours, expected, atol=1e-4 * np.abs(expected).max())
        # and a new user's uniform confidence
        uniform = user_items.copy()
        uniform.data[:] = bundle.liked_confidence
        np.testing.assert_allclose(
            cb.fold_in(
                bundle.item_factors, bundle.gram, uniform.indices, bundle.liked_confidence, bundle.regularization
            ),
            als.recalculate_user(0, uniform),
            atol=1e-4 * np.abs(expected).max(),
        )


def test_liked_confidence_is_the_trained_confidence_of_a_newest_positive(published_settings):
    bundle = served_bundle(published_settings)
    params = json.loads((Path(published_settings.artifacts) / "first" / "params.json").read_text())
    trained = Settings(**{k: v for k, v in params.items() if k in Settings.__dataclass_fields__})
    assert bundle.alpha == trained.alpha and bundle.regularization == trained.regularization
    assert [weight for weight, _ in bundle.item_parts] == [trained.blend_weight, trained.sequence_weight]
    threshold = np.array([trained.positive_threshold])
    assert bundle.liked_confidence == pytest.approx(float(model.confidence(threshold, trained)[0]))
    assert bundle.liked_confidence == pytest.approx(float(model.confidence(threshold, trained, np.array([0]))[0]))


def test_fold_in_of_a_known_users_history_reproduces_their_precomputed_top_10(published_settings):
    """The run's method for a folded-in user, given that user's own weights, against the list
    precompute stored. Measured: mean overlap 0.984, min 0.8 over the first 200 users
    (training solves users with 3 conjugate-gradient steps, the fold-in exactly)."""
    bundle = served_bundle(published_settings)
    user_ids, data = known_users(published_settings)
    overlaps = []
    with sqlite3.connect(published_settings.db) as conn:
        for row in range(200):
            confidence = data.confidence[row]
            profiles = [
                (data.profile[row].indices, data.profile[row].data),  # cosine part
                (data.recent[row].indices, data.recent[row].data),
            ]  # sequence part
            scores = cb.method_scores(bundle, confidence.indices, confidence.data, profiles)
            top = bundle.movie_ids[scoring.top_k(scores, data.seen[row].indices, 10)]
            precomputed = {
                r[0]
                for r in conn.execute(
                    "SELECT movie_id FROM recommendations WHERE run_id = 'first' AND user_id = ? AND rank <= 10",
                    (int(user_ids[row]),),
                )
            }
            overlaps.append(len(set(top.tolist()) & precomputed) / 10)
    print(f"top-10 overlap with the precomputed lists: mean {np.mean(overlaps):.3f}, min {np.min(overlaps):.1f}")
    assert np.mean(overlaps) >= 0.9 and np.min(overlaps) >= 0.5


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "liked, message",
    [
        ("", "no movie ids given"),
        ("   ", "no movie ids given"),
        ([], "no movie ids given"),
        (None, "no movie ids given"),
        ("296,abc", "'abc' is not an integer movie id"),
        ("296,3.5", "'3.5' is not an integer movie id"),
        ("296,,318", "empty entry"),
        ("296,318,", "empty entry"),
        ([296, 3.0], "3.0 is not an integer movie id"),
        ([True], "True is not an integer movie id"),
        ("0", "0 is not a valid movie id"),
        ("-5", "-5 is not a valid movie id"),
        ("99999999999", "99999999999 is not a valid movie id"),
        (",".join(str(i) for i in range(1, 102)), "101 distinct movie ids given; at most 100"),
        ("١٢٣", "is not an integer movie id"),  # non-ASCII digits
        ("--5", "'--5' is not an integer movie id"),
    ],
)
def test_bad_liked_ids_are_rejected_and_nothing_is_written(served, liked, message):
    before = count_rows(served.db)
    with pytest.raises(ConfigError, match=message):
        cs.cold_start(served, liked)
    assert count_rows(served.db) == before


@pytest.mark.parametrize("k", [0, 101, -1, "x", "", 2.0, True, None])
def test_bad_k_is_rejected_and_nothing_is_written(served, k):
    before = count_rows(served.db)
    with pytest.raises(ConfigError, match="k: .* is out of range; expected an integer from 1 to 100"):
        cs.cold_start(served, SEEDS, k)
    assert count_rows(served.db) == before


def test_accepted_shapes_of_input():
    assert cs.parse_liked(" 296, 318 ,593,296") == (296, 318, 593)
    assert cs.parse_liked(["296", 318, np.int64(593)]) == (296, 318, 593)
    assert cs.parse_liked(",".join(["7"] * 150)) == (7,)  # the limit counts distinct ids
    assert cs.parse_liked(range(1, 101)) == tuple(range(1, 101))
    assert cs.check_k("1") == 1 and cs.check_k(100) == 100


def test_no_published_run_is_a_clear_error_and_writes_nothing(tmp_path):
    settings = Settings(db=tmp_path / "empty.db", artifacts=tmp_path / "artifacts")
    with pytest.raises(StateError, match="empty.db: no database; run `recjobs run` first"):
        cs.cold_start(settings, SEEDS)
    assert not settings.db.exists()
    with db.transaction(settings.db):
        pass  # a database with the schema and no published run
    with pytest.raises(StateError, match="no published run to answer from; run `recjobs run` first"):
        cs.cold_start(settings, SEEDS)
    assert count_rows(settings.db) == (0, 0)


def test_cli_prints_titles_and_reports_unknown_ids(served):
    out = CliRunner().invoke(
        cli,
        [
            "-q",
            "cold-start",
            "--db",
            str(served.db),
            "--artifacts",
            str(served.artifacts),
            "--liked",
            "296,318,593,999999999",
            "--k",
            "3",
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "by blend from run first" in lines[0]
    assert lines[1].strip() == "not known to the model (ignored): 999999999"
    assert len(lines) == 5 and re.search(r"\(\d{4}\)$", lines[2])  # the title, with its year

    as_json = CliRunner().invoke(
        cli,
        ["-q", "cold-start", "--db", str(served.db), "--artifacts", str(served.artifacts), "--liked", "296", "--json"],
    )
    data = json.loads(as_json.output)
    assert data["run_id"] == "first" and data["k"] == 10 and len(data["recommendations"]) == 10
    # objects named as the cold_start canned query's columns
    names = ["movie_id", "title", "genres", "year", "score", "because_movie_id", "because_title"]
    assert all(list(movie) == names for movie in data["recommendations"])
    assert isinstance(data["recommendations"][0]["movie_id"], int) and data["recommendations"][0]["title"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--liked", "296,x"], "Error: liked: 'x' is not an integer movie id"),
        (["--liked", "296", "--k", "0"], "Error: k: 0 is out of range"),
        (["--liked", "296", "--k", "ten"], "Error: k: 'ten' is out of range"),
        (["--liked", ",".join(map(str, range(1, 200)))], "Error: liked: 199 distinct movie ids given"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(served, args, message):
    before = count_rows(served.db)
    out = CliRunner().invoke(cli, ["cold-start", "--db", str(served.db), *args])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == [out.output.strip()] and out.output.startswith(message)
    assert count_rows(served.db) == before


# ---- lightness ---------------------------------------------------------------------------


COLD_START_COMMAND_MODULES = {
    "recjobs",
    "recjobs.cli",
    "recjobs.jobs",
    "recjobs.method",
    "recjobs.storage",
    "recjobs.settings",
    "recjobs.errors",
    "recjobs.jobs.cold_start",
    "recjobs.storage.artifacts",
    "recjobs.method.bundle",
    "recjobs.storage.db",
    "recjobs.method.scoring",
    "recjobs.method.rules",
    "recjobs.method.reasons",
    "recjobs.method.diversity",
    "recjobs.method.new_users",
}


def test_the_command_imports_only_its_own_modules_numpy_and_the_stdlib_sqlite3(served):
    """The import graph of the whole `recjobs cold-start` process, as `python -X importtime`
    reports it: its own job and library modules, numpy, click, sqlite3; no SQLAlchemy (its
    import alone is about 0.17 s), no other job, pandas, scipy, implicit or Airflow."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "recjobs", "-q", "cold-start", "--db", str(served.db)]
        + ["--artifacts", str(served.artifacts), "--liked", "296,318,593"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "by blend from run first" in done.stdout
    loaded = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"numpy", "click", "sqlite3", "recjobs.jobs.cold_start"} <= loaded
    assert {m for m in loaded if m.split(".")[0] == "recjobs"} == COLD_START_COMMAND_MODULES
    heavy = {"sqlalchemy", "pandas", "airflow", "implicit", "scipy", "threadpoolctl", "datasette", "yaml"}
    assert not heavy & {m.split(".")[0] for m in loaded}


def test_the_cli_exit_status_is_non_zero_for_bad_input(served):
    done = subprocess.run(
        [sys.executable, "-m", "recjobs.cli", "cold-start", "--db", str(served.db), "--liked", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: liked: 'abc' is not an integer movie id; expected integers, e.g. --liked 296,318,593"
    )


# ---- one complete run while another is published ----------------------------------------

READER = """
import json, sys, time
from pathlib import Path
from recjobs.jobs.cold_start import cold_start
from recjobs.settings import Settings
settings = Settings(db=sys.argv[1], artifacts=sys.argv[2])
stop = Path(sys.argv[3])
while not stop.exists():
    r = cold_start(settings, [296, 318, 593], 10)
    print(json.dumps([r.request_id, r.run_id, [movie.movie_id for movie in r.recommendations]]), flush=True)
"""


def reference_answer(run_dir: Path) -> list[int]:
    bundle = cb.read_bundle(run_dir.name, run_dir)
    rows = np.searchsorted(bundle.movie_ids, SEEDS)
    _, scores = cb.scores_for(bundle, rows)
    return bundle.movie_ids[scoring.top_k(scores, rows, 10)].tolist()


def test_requests_during_a_publish_answer_from_one_complete_run(served, tmp_path):
    """A reader process asks again and again while run `second` is published over `first`
    and the pointer is flipped back and forth; every answer must be the one its run gives."""
    second = served.replace(
        artifacts=tmp_path / "artifacts", random_seed=7, factors=16, iterations=5, gate_tolerance=0.5
    )  # a quicker, different model that still passes the gate
    for step in (load.load, split.split, train.train, evaluate.evaluate):
        step(second, "second")
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(served.db), str(served.artifacts), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    answers: list = []
    collector = threading.Thread(target=lambda: answers.extend(json.loads(line) for line in reader.stdout), daemon=True)
    collector.start()

    def wait_for_answer_from(run_id: str) -> None:
        seen, deadline = len(answers), time.monotonic() + 120
        while not any(a[1] == run_id for a in answers[seen:]):
            assert reader.poll() is None, reader.stderr.read()
            assert time.monotonic() < deadline, f"no answer from {run_id} within 120 s"
            time.sleep(0.05)

    try:
        wait_for_answer_from("first")
        assert precompute.precompute(second, "second").status == "published"  # readers keep asking meanwhile
        wait_for_answer_from("second")
        for target in ("first", "second", "first"):
            publish.rollback(served, target)
            wait_for_answer_from(target)
        stop.touch()
        reader.wait(timeout=60)
        collector.join(timeout=10)
    finally:
        if reader.poll() is None:
            os.killpg(reader.pid, signal.SIGTERM)
            try:
                reader.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(reader.pid, signal.SIGKILL)
                reader.wait()
    assert reader.returncode == 0, reader.stderr.read()
    expected = {
        "first": reference_answer(Path(served.artifacts) / "first"),
        "second": reference_answer(Path(second.artifacts) / "second"),
    }
    assert expected["first"] != expected["second"]
    with sqlite3.connect(served.db) as conn:
        for request_id, run_id, ids in answers:
            assert ids == expected[run_id], (request_id, run_id)
            stored_run = conn.execute(
                "SELECT run_id FROM cold_start_requests WHERE request_id = ?", (request_id,)
            ).fetchone()[0]
            stored_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT movie_id FROM cold_start_recommendations WHERE request_id = ? ORDER BY rank", (request_id,)
                )
            ]
            assert (stored_run, stored_ids) == (run_id, ids)


def test_a_retrained_run_gets_a_fresh_bundle(tiny_settings):
    for step in (load.load, split.split, train.train):
        step(tiny_settings, "tiny")
    with db.transaction(tiny_settings.db) as conn:
        publish.flip(conn, "tiny")
    run_dir = Path(tiny_settings.artifacts) / "tiny"
    first = cs.cold_start(tiny_settings, [1], k=5)
    before = np.array(cb.read_bundle("tiny", run_dir).item_factors)
    time.sleep(0.01)
    train.train(tiny_settings.replace(random_seed=7), "tiny")
    again = cs.cold_start(tiny_settings, [1], k=5)
    after = cb.read_bundle("tiny", run_dir)
    assert not np.allclose(before, after.item_factors)
    assert np.array_equal(after.item_factors, model.Factors.read(run_dir / "model_full.npz").item_factors)
    assert first.run_id == again.run_id == "tiny"
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_missing_artifacts_of_the_served_run_are_a_clear_error(served, tmp_path):
    with sqlite3.connect(served.db) as conn:
        conn.execute("UPDATE model_runs SET artifacts_dir = ? WHERE run_id = 'first'", (str(tmp_path / "gone"),))
    settings = served.replace(artifacts=tmp_path / "elsewhere")
    before = count_rows(settings.db)
    with pytest.raises(StateError, match=r"elsewhere/first/model_full.npz: not found; the served run's artifacts"):
        cs.cold_start(settings, SEEDS)
    assert count_rows(settings.db) == before


def test_a_huge_id_is_one_line_not_a_traceback():
    with pytest.raises(ConfigError, match=r"liked: a 5000-digit number is not a valid movie id; expected 1 to"):
        cs.parse_liked("1" * 5000)
    with pytest.raises(ConfigError, match=r"\(5002 characters\) is not an integer movie id"):
        cs.parse_liked("x" + "1" * 5000 + "x")
    assert cs.parse_liked("0000000000000000000296") == (296,)  # leading zeros are not digits of size


def test_a_truncated_bundle_is_written_again(small_published):
    settings = small_published
    bundle_dir = settings.artifacts / "first" / "cold_start"
    factors = bundle_dir / "item_factors.npy"
    whole = factors.read_bytes()
    factors.write_bytes(whole[: len(whole) // 2])
    cb._cache.clear()
    result = cs.cold_start(settings, [1, 2], 3)
    assert len(result.recommendations) == 3 and factors.read_bytes() == whole


def test_a_full_disk_while_writing_the_bundle_is_one_line_and_leaves_nothing(small_published, monkeypatch):
    run_dir = small_published.artifacts / "first"

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cb.np, "save", no_space)
    with pytest.raises(StateError, match=r"could not write the cold-start bundle \(No space left on device\); "):
        cb.write_bundle(run_dir)
    assert not list(run_dir.glob(".cold_start.new.*"))


def test_a_moved_database_reads_the_artifacts_folder_it_is_given(small_published, tmp_path):
    import shutil

    moved = shutil.copytree(small_published.artifacts, tmp_path / "moved-artifacts")
    assert (small_published.artifacts / "first").is_dir()  # the recorded folder still exists
    settings = small_published.replace(artifacts=moved)
    recorded = str((small_published.artifacts / "first").resolve())
    assert cs.served_run_dir(settings.artifacts, "first", recorded) == moved / "first"
    gone = small_published.replace(artifacts=tmp_path / "nowhere")
    assert cs.served_run_dir(gone.artifacts, "first", recorded) == Path(recorded)  # only the recorded one has it
