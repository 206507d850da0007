"""Benchmark of movie_recs_refresh end to end: seconds from a ratings file landing in incoming/
to the served JSON changing, under the real Airflow scheduler on the DAG's own schedule.

    python tests/benchmarks/bench_refresh_latency.py --db artifacts/recs.db   # or: make bench-refresh-latency

Copies --db into a working folder (--out), starts Airflow's api-server, scheduler and
dag-processor on a loopback port with the project's airflow.env (the refresh DAG unpaused on
its default schedule, every minute; the nightly DAG left paused) and `recjobs serve` (one
process) on the copy. It waits for one refresh run to succeed (so the pipeline is warm), then
drops --files ratings files into incoming/, --spacing seconds apart with random jitter, each
landing atomically (os.rename). The files hold --ratings ratings of --users random users of
the published run: per user, movies of their current top 10 rated 5.0, so the list must
change (a rated movie leaves it). A thread polls recommendations_for_user of every pending
user every --poll seconds until refreshed_at changes or the rated movies are gone; a rating's
latency is that moment minus its file's landing (a user's ratings share it). A user not seen
within --timeout seconds is missing.

Prints a Markdown table (p50, p95 nearest rank, max; the refresh job's own seconds from the
`refreshes` table; DAG runs and their scheduling delays from Airflow's metadata database) and
writes the raw latencies to <out>/refresh_latency.json. Every process it starts is stopped by
pid, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import http.client
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support import (  # noqa: E402
    REPO,
    Processes,
    airflow_env,
    copy_db,
    free_port,
    migrate,
    query,
    running_server,
    wait_for,
)

DAG_ID = "movie_recs_refresh"
START_TIMEOUT = 180  # seconds for the api-server to answer and the DAG to be parsed
WARM_TIMEOUT = 300  # seconds for the first refresh run to succeed
PATH = "/recs/recommendations_for_user.json?user_id={}&_shape=array"


def published(db: Path, artifacts: Path | None) -> tuple[str, Path]:
    """(the published run id, the artifacts folder holding it: --artifacts or model_runs')."""
    run_id, artifacts_dir = query(
        db, "SELECT p.run_id, r.artifacts_dir FROM published_run AS p JOIN model_runs AS r USING (run_id)"
    )[0]
    return run_id, (artifacts or Path(artifacts_dir).parent).resolve()


def choose_ratings(db: Path, n_users: int, n_ratings: int, seed: int) -> dict[int, list[int]]:
    """user -> the movies they rate: random users of the published run, each rating movies of
    their current top 10 (n_ratings spread evenly over the users)."""
    rng = random.Random(seed)
    users = sorted(u for (u,) in query(db, "SELECT DISTINCT user_id FROM current_recommendations"))
    if len(users) < n_users:
        sys.exit(f"{db}: the published run has {len(users)} users, fewer than --users {n_users}")
    chosen = rng.sample(users, n_users)
    per_user = [n_ratings // n_users + (i < n_ratings % n_users) for i in range(n_users)]
    rated = {}
    for user, count in zip(chosen, per_user, strict=True):
        top = [
            m
            for (m,) in query(db, "SELECT movie_id FROM current_recommendations WHERE user_id = ? AND rank <= 10", user)
        ]
        rated[user] = rng.sample(top, min(count, len(top)))
    return rated


def split_users(users: list[int], n_files: int) -> list[list[int]]:
    """n_files groups of users, as even as can be; no user in two files."""
    size, extra = divmod(len(users), n_files)
    groups, start = [], 0
    for i in range(n_files):
        end = start + size + (i < extra)
        groups.append(users[start:end])
        start = end
    return groups


def land(incoming: Path, name: str, rows: list[tuple]) -> float:
    """Write the file beside incoming/ and rename it in (one atomic step); the landing time."""
    staging = incoming.parent / f".{name}.part"
    with open(staging, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        writer.writerows(rows)
    landed = time.time()
    os.rename(staging, incoming / name)
    return landed


class Watcher(threading.Thread):
    """Polls the served list of each pending user until it changes; records when it first did."""

    def __init__(self, url: str, poll: float, timeout: float):
        super().__init__(daemon=True)
        parts = url.removeprefix("http://").split(":")
        self.host, self.port = parts[0], int(parts[1])
        self.poll, self.timeout = poll, timeout
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.pending: dict[int, dict] = {}  # user -> landed, movies, refreshed_at before, next poll
        self.seen: dict[int, dict] = {}  # user -> landed, seen, rated movies still listed
        self.missing: dict[int, float] = {}  # user -> landed
        self.requests = self.errors = 0

    def rows(self, conn: http.client.HTTPConnection, user: int) -> list[dict] | None:
        self.requests += 1
        for attempt in (1, 2):  # the server closes a connection idle for 5 s: reconnect once
            try:
                conn.request("GET", PATH.format(user))
                response = conn.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt == 2:
                    self.errors += 1
                    return None
        if response.status != 200:
            self.errors += 1
            return None
        return json.loads(body)

    def before(self, user: int) -> str | None:
        """The user's refreshed_at now (None: the nightly list)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            rows = self.rows(conn, user)
        finally:
            conn.close()
        if not rows:
            sys.exit(f"user {user}: no served list before the benchmark")
        return rows[0]["refreshed_at"]

    def watch(self, users: dict[int, list[int]], landed: float, before: dict[int, str | None]) -> None:
        with self.lock:
            for user, movies in users.items():
                self.pending[user] = {"landed": landed, "movies": set(movies), "before": before[user], "next": 0.0}

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        while not self.stop.is_set():
            now = time.time()
            with self.lock:
                due = [u for u, p in self.pending.items() if p["next"] <= now]
            for user in due:
                p = self.pending[user]
                rows = self.rows(conn, user)
                seen = time.time()
                if rows:
                    listed = {r["movie_id"] for r in rows} & p["movies"]
                    if rows[0]["refreshed_at"] != p["before"] or not listed:
                        self.seen[user] = {"landed": p["landed"], "seen": seen, "still_listed": len(listed)}
                        with self.lock:
                            del self.pending[user]
                        continue
                if seen - p["landed"] > self.timeout:
                    self.missing[user] = p["landed"]
                    with self.lock:
                        del self.pending[user]
                    continue
                p["next"] = seen + self.poll
            self.stop.wait(0.05)
        conn.close()


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def dag_runs(airflow_db: Path, since: float) -> list[dict]:
    """The refresh DAG's runs scheduled after `since` (epoch seconds), with their task's times."""
    after = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    rows = query(
        airflow_db,
        "SELECT r.run_id, r.state, r.run_after, r.start_date, r.end_date, t.start_date, t.end_date, t.duration "
        "FROM dag_run AS r LEFT JOIN task_instance AS t ON t.run_id = r.run_id AND t.dag_id = r.dag_id "
        "WHERE r.dag_id = ? AND r.run_after >= ? ORDER BY r.run_after",
        DAG_ID,
        after,
    )
    keys = ("run_id", "state", "run_after", "start", "end", "task_start", "task_end", "task_seconds")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=REPO / "artifacts" / "recs.db", help="published database (copied)")
    parser.add_argument("--artifacts", type=Path, help="its artifacts folder (default: the one model_runs records)")
    parser.add_argument("--files", type=int, default=20, help="ratings files dropped into incoming/")
    parser.add_argument("--ratings", type=int, default=1000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=30, help="seconds between files (x 0.5-1.5, random)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between two looks at a pending user")
    parser.add_argument("--timeout", type=float, default=300, help="seconds after which a user counts as missing")
    parser.add_argument("--out", type=Path, help="working folder (default: a new one under artifacts/)")
    parser.add_argument("--keep-db", action="store_true", help="keep the database copy in --out")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        sys.exit(f"{args.db}: no database; run `recjobs run` first (or pass --db)")
    if not 1 <= args.files <= args.users:
        sys.exit(f"--files {args.files}: must be from 1 to --users ({args.users})")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM)"))
    random.seed(args.seed)

    (REPO / "artifacts").mkdir(exist_ok=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-refresh-latency-", dir=REPO / "artifacts"))
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_id, artifacts = published(args.db, args.artifacts)
    print(f"copying {args.db} to {out / 'recs.db'} ...", flush=True)
    copied = time.perf_counter()
    db = copy_db(args.db, out / "recs.db")
    print(f"copied in {time.perf_counter() - copied:.0f} s; published run {run_id}, artifacts {artifacts}", flush=True)
    from recjobs.storage.db import engine_for

    engine_for(db).dispose()  # this code's schema (refreshed_at ...), as the first refresh would add it
    data_dir = out / "data"
    incoming = data_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    for old in incoming.glob("*.csv"):
        old.unlink()
    rated = choose_ratings(db, args.users, args.ratings, args.seed)
    groups = split_users(list(rated), args.files)

    port = free_port()
    env = airflow_env(
        out / "airflow",
        out,
        data_dir,
        RECJOBS_ARTIFACTS=str(artifacts),
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
    )
    print(f"airflow db migrate in {out / 'airflow'} ...", flush=True)
    migrate(env)
    (out / "logs").mkdir(exist_ok=True)
    processes = Processes(env, out / "logs")
    api = f"http://127.0.0.1:{port}/api/v2"
    http = requests.Session()  # simple auth manager, all admins (airflow.env): no token needed
    watcher = None
    try:
        processes.start("api-server", "--port", str(port))
        processes.start("scheduler")
        processes.start("dag-processor")
        with running_server(db, out / "logs" / "serve.log", workers=1, artifacts=artifacts) as server:
            wait_for(
                "api-server health", lambda: http.get(f"{api}/monitor/health", timeout=5).ok, START_TIMEOUT, processes
            )
            wait_for("DAG parsed", lambda: http.get(f"{api}/dags/{DAG_ID}", timeout=5).ok, START_TIMEOUT, processes)
            unpausing = http.patch(f"{api}/dags/{DAG_ID}", json={"is_paused": False}, timeout=10)
            if not unpausing.ok:
                sys.exit(f"could not unpause {DAG_ID}: {unpausing.status_code} {unpausing.text[:300]}")
            unpaused = time.time()
            print("movie_recs_refresh unpaused; waiting for a first run to succeed (warm-up) ...", flush=True)

            def succeeded():
                runs = http.get(f"{api}/dags/{DAG_ID}/dagRuns", params={"state": "success"}, timeout=10).json()
                return runs["total_entries"] > 0

            wait_for("a first successful refresh run", succeeded, WARM_TIMEOUT, processes, every=2.0)
            print(f"warm after {time.time() - unpaused:.0f} s; dropping {args.files} files ...", flush=True)

            watcher = Watcher(server.url, args.poll, args.timeout)
            before = {user: watcher.before(user) for user in rated}
            watcher.start()
            landings = []
            time.sleep(random.uniform(0, 60))  # the first landing at a random point of the minute
            for i, users in enumerate(groups):
                now = int(time.time())
                rows = [(user, movie, 5.0, now) for user in users for movie in rated[user]]
                landed = land(incoming, f"bench-{i:03d}.csv", rows)
                watcher.watch({user: rated[user] for user in users}, landed, before)
                landings.append(landed)
                print(f"  file {i + 1}/{args.files}: {len(users)} users, {len(rows)} ratings", flush=True)
                if i + 1 < len(groups):
                    time.sleep(args.spacing * random.uniform(0.5, 1.5))
            while watcher.pending and watcher.is_alive():
                time.sleep(1)
            watcher.stop.set()
            watcher.join()
    finally:
        if watcher is not None:
            watcher.stop.set()
        processes.stop()
    report(args, out, db, run_id, rated, landings, watcher)
    if not args.keep_db:
        for part in ("recs.db", "recs.db-wal", "recs.db-shm", "recs.db.refresh.lock"):
            (out / part).unlink(missing_ok=True)


def median_and_max(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.1f} s / {max(values):.1f} s" if values else "n/a"


def report(args, out: Path, db: Path, run_id: str, rated: dict, landings: list[float], watcher: Watcher) -> None:
    latencies = []  # one per rating: a user's ratings share their list's change
    for user, found in watcher.seen.items():
        latencies += [found["seen"] - found["landed"]] * len(rated[user])
    n_missing = sum(len(rated[user]) for user in watcher.missing)
    still_listed = sum(1 for found in watcher.seen.values() if found["still_listed"])
    first = dt.datetime.fromtimestamp(landings[0], dt.UTC).isoformat(timespec="seconds")
    refreshes = query(db, "SELECT seconds, n_ratings, n_users FROM refreshes WHERE refreshed_at >= ?", first)
    folded = [(seconds, n_users) for seconds, n_ratings, n_users in refreshes if n_ratings]
    runs = dag_runs(out / "airflow" / "airflow.db", landings[0] - 60)  # Airflow stopped after the last user
    size = query(db, "SELECT COUNT(*) FROM ratings")[0][0]
    print(
        f"\n{args.db} (run {run_id}, {size:,} ratings): {args.ratings} ratings of {args.users} users in "
        f"{args.files} files, {args.spacing:.0f} s apart (x 0.5-1.5), seed {args.seed}; schedule every minute; "
        f"warm (one refresh run succeeded first); poll every {args.poll} s; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    latency = (
        {
            "latency p50 (file landed to served JSON changed)": f"{statistics.median(latencies):.1f} s",
            "latency p95 (nearest rank)": f"{nearest_rank(latencies, 0.95):.1f} s",
            "latency min / max": f"{min(latencies):.1f} s / {max(latencies):.1f} s",
        }
        if latencies
        else {}
    )
    rows = {
        f"ratings measured / missing (no change within {args.timeout:.0f} s)": f"{len(latencies)} / {n_missing}",
        **latency,
        "refresh job's own seconds, median / max (`refreshes.seconds`)": median_and_max(s for s, _ in folded),
        "refreshes that folded ratings in / their users": f"{len(folded)} / {sum(u for _, u in folded)}",
        "DAG runs from a minute before the first file to the end": (
            f"{len(runs)} ({sum(r['state'] == 'success' for r in runs)} succeeded)"
        ),
        "a run's scheduled time to its task's start, median / max": median_and_max(
            seconds_between(r["run_after"], r["task_start"]) for r in runs
        ),
        "the refresh task's duration in Airflow, median / max": median_and_max(r["task_seconds"] for r in runs),
        "users whose remade list still holds a rated movie": str(still_listed),
        "requests to the server (errors)": f"{watcher.requests} ({watcher.errors})",
    }
    print("| measure | value |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value} |")
    result = {
        "db": str(args.db),
        "run_id": run_id,
        "args": {k: str(v) for k, v in vars(args).items()},
        "latencies": sorted(latencies),
        "users": {str(user): {**found, "movies": rated[user]} for user, found in watcher.seen.items()},
        "missing_users": {str(user): landed for user, landed in watcher.missing.items()},
        "landings": landings,
        "refreshes": [{"seconds": s, "n_ratings": n, "n_users": u} for s, n, u in refreshes],
        "dag_runs": runs,
    }
    (out / "refresh_latency.json").write_text(json.dumps(result, indent=1))
    print(f"\nraw latencies: {out / 'refresh_latency.json'}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
