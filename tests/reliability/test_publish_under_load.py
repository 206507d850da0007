"""16 clients read recommendations while two runs are published one after the other (each a
`recjobs precompute` in another process): no errors, no answer mixing two runs, p99 reported."""

from __future__ import annotations

import random
import sqlite3
import statistics
import threading
import time

import requests

from support import running_server

CLIENTS = 16
K = 10


def read(url: str, user_ids: list[int], stop: threading.Event, out: list, seed: int) -> None:
    rng, session = random.Random(seed), requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = session.get(
                f"{url}/recs/recommendations_for_user.json",
                params={"user_id": rng.choice(user_ids), "k": K, "_shape": "array"},
                timeout=60,
            )
            rows = response.json() if response.status_code == 200 else None
            out.append((time.monotonic() - started, response.status_code, rows))
        except requests.RequestException as e:
            out.append((time.monotonic() - started, repr(e), None))


def test_16_clients_during_two_publishes_see_no_error_and_no_mixed_answer(two_runs, tally, tmp_path):
    conn = sqlite3.connect(f"file:{two_runs.db}?mode=ro", uri=True)
    user_ids = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM recommendations WHERE run_id = 'first'")]
    conn.close()
    answers, stop = [], threading.Event()
    with running_server(two_runs.db, tmp_path / "serve.log") as server:
        readers = [
            threading.Thread(target=read, args=(server.url, user_ids, stop, answers, seed)) for seed in range(CLIENTS)
        ]
        for thread in readers:
            thread.start()
        try:
            time.sleep(1.0)
            publishes = [two_runs.publish("first"), two_runs.publish("second")]
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in readers:
                thread.join(timeout=120)
    errors = [a for a in answers if a[1] != 200]
    runs_per_answer = [{row["run_id"] for row in a[2]} for a in answers if a[1] == 200]
    mixed = [r for r in runs_per_answer if len(r) != 1]
    short = [a for a in answers if a[1] == 200 and len(a[2]) != K]
    seen = set().union(*runs_per_answer)
    times = sorted(a[0] for a in answers)
    p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
    tally(
        "concurrency",
        f"{CLIENTS} clients during two publishes",
        len(answers),
        len(answers) - len(errors) - len(mixed) - len(short),
        errors=len(errors),
        mixed=len(mixed),
        p50_ms=round(1000 * p50, 1),
        p99_ms=round(1000 * p99, 1),
    )
    assert [p.returncode for p in publishes] == [0, 0], [p.stderr[-300:] for p in publishes]
    assert len(answers) > 500 and not errors and not mixed and not short, (errors[:3], mixed[:3], short[:3])
    assert seen == {"first", "second"}  # both runs were served, each answer from one
