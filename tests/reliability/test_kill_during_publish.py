"""kill -9 during publishing, again and again, with a server polled throughout: the file stays
intact, readers see the old run or the new one, complete, and every answer comes from one run."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time

import requests

from support import running_server

KILLS = int(os.environ.get("RECJOBS_RELIABILITY_KILLS", "50"))  # kills that land inside the publish transaction
LET_THROUGH_EVERY = 6  # every 6th publish runs to the end, so the pointer flips back and forth
K = 10


def write_locked(conn) -> bool:
    """Whether another process holds the database's write lock (a publish transaction is open)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            return True
        raise
    conn.execute("ROLLBACK")
    return False


def poll(url: str, user_ids: list[int], runs: set, stop: threading.Event, out: dict) -> None:
    rng, session = random.Random(7), requests.Session()
    while not stop.is_set():
        try:
            response = session.get(
                f"{url}/recs/recommendations_for_user.json",
                params={"user_id": rng.choice(user_ids), "k": K, "_shape": "array"},
                timeout=30,
            )
            rows = response.json() if response.status_code == 200 else []
            served = {row["run_id"] for row in rows}
            ok = response.status_code == 200 and len(rows) == K and len(served) == 1 and served <= runs
            out["requests"] += 1
            out["bad"] += not ok
        except requests.RequestException:
            out["requests"] += 1
            out["bad"] += 1


def check_state(db, two_runs, allowed: set) -> str:
    """Integrity ok, the published run one of `allowed`, and both runs' rows complete."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        published = conn.execute("SELECT run_id FROM published_run").fetchone()[0]
        assert published in allowed, (published, allowed)
        for run_id, expected in two_runs.expected.items():
            assert two_runs.row_counts(conn, run_id) == expected, run_id
        return published
    finally:
        conn.close()


def test_kill_9_during_publishing_never_loses_or_mixes_a_run(two_runs, tally, tmp_path):
    db = two_runs.db
    users = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    user_ids = [r[0] for r in users.execute("SELECT DISTINCT user_id FROM recommendations WHERE run_id = 'first'")]
    users.close()
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    rng = random.Random(2026)
    polled, stop = {"requests": 0, "bad": 0}, threading.Event()
    published = check_state(db, two_runs, {"second"})
    kills = kills_in_transaction = completed = attempts = 0
    window = None  # seconds the publish transaction stays open, measured on the first full publish
    started = time.monotonic()
    with running_server(db, tmp_path / "serve.log") as server:
        poller = threading.Thread(target=poll, args=(server.url, user_ids, {"first", "second"}, stop, polled))
        poller.start()
        try:
            while kills_in_transaction < KILLS:
                assert attempts < 4 * KILLS, f"only {kills_in_transaction} of {attempts} kills landed in a publish"
                target = "first" if published == "second" else "second"
                attempts += 1
                proc = subprocess.Popen(
                    two_runs.precompute_command(target),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                let_through = window is None or attempts % LET_THROUGH_EVERY == 0
                while proc.poll() is None and not write_locked(probe):
                    time.sleep(0.01)
                locked_at = time.monotonic()
                if let_through:
                    assert proc.wait(timeout=600) == 0
                    window = window or time.monotonic() - locked_at
                else:
                    time.sleep(rng.uniform(0, window))
                    in_transaction = proc.poll() is None and write_locked(probe)
                    with contextlib.suppress(ProcessLookupError):  # it may have just ended (and been reaped)
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    if proc.returncode == -signal.SIGKILL:
                        kills += 1
                        kills_in_transaction += in_transaction
                completed += proc.returncode == 0
                published = check_state(db, two_runs, {published, target})
        finally:
            stop.set()
            poller.join(timeout=60)
            probe.close()
    assert polled["requests"] > 100 and polled["bad"] == 0, polled
    tally(
        "crash",
        "kill -9 during publish",
        kills,
        kills,
        in_transaction=kills_in_transaction,
        full_publishes=completed,
        transaction_s=round(window, 2),
        requests_polled=polled["requests"],
        bad_answers=polled["bad"],
        minutes=round((time.monotonic() - started) / 60, 1),
    )
