"""Benchmark of `recjobs serve`: recommendations_for_user for random users (k=10) at concurrency 8.

Starts `recjobs serve` on a copy of --db twice in one run, with one server process and with
--workers processes, and drives each with wrk (`--tool wrk`, the default; Debian package wrk)
or Python threads: plain requests; plain requests while a run is published (`recjobs
precompute` of the served run, in another process); a caching client that sends back the
ETag it got (If-None-Match), so unchanged answers come back as 304; the same requests through
datasette's own query view (an extra argument the plugin's lookup lane leaves to datasette),
plain and during a publish; and new users on the cold-start route (1 to 10 random movies the
model knows, k=10), plain and during a publish. Prints requests/s, p50, p99 and errors of each
(median of the repeats) and the multi-process/one-process ratios.

    python tests/benchmarks/bench_serve.py --db artifacts/recs.db            # or: make bench-serve
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support import copy_db, running_server  # noqa: E402

PATH = "/recs/recommendations_for_user.json?user_id={}&k=10&_shape=array"
# the same answer through datasette's own query view: the plugin's lookup lane leaves any other
# argument to datasette, and _json_infinity=0 is datasette's default
DATASETTE_PATH = PATH + "&_json_infinity=0"
COLD_START_PATH = "/recs/-/cold_start.json?k=10&_shape=array&liked="


def published_ids(db: Path, query: str) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute(query)]
    finally:
        conn.close()


def user_ids(db: Path) -> list[int]:
    """The users the published run has recommendations for."""
    return published_ids(
        db, "SELECT DISTINCT r.user_id FROM published_run AS p JOIN recommendations AS r ON r.run_id = p.run_id"
    )


def python_client(url: str, users: list[int], concurrency: int, seconds: float, until=None) -> dict:
    """`seconds` of requests, or until the event `until` is set."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    latencies, errors, stop = [], [], threading.Event()

    def worker(seed: int):
        rng, conn, mine = random.Random(seed), http.client.HTTPConnection(host, port, timeout=30), []
        while not stop.is_set():
            started = time.perf_counter()
            conn.request("GET", PATH.format(rng.choice(users)))
            response = conn.getresponse()
            body = response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200 or not body.startswith(b"[{"):
                errors.append(response.status)
        conn.close()
        latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    (until or threading.Event()).wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def cold_start_movies(db: Path) -> list[int]:
    """The movies the published model knows (its similar-movies rows), for random liked lists."""
    return published_ids(
        db, "SELECT DISTINCT s.movie_id FROM published_run AS p JOIN similar_movies AS s ON s.run_id = p.run_id"
    )


def user_path_lua(users: list[int], path: str = PATH) -> str:
    """Lua for wrk: `path`, recommendations_for_user of a random known user."""
    return (
        "local users = {" + ",".join(map(str, users)) + "}\n"
        "local function next_path()\n"
        f"  return string.format('{path.replace('{}', '%d')}', users[math.random(#users)])\n"
        "end\n"
    )


def cold_start_path_lua(movies: list[int]) -> str:
    """Lua for wrk: `path`, the cold-start route for 1 to 10 random movies the model knows."""
    return (
        "local movies = {" + ",".join(map(str, movies)) + "}\n"
        "local function next_path()\n"
        "  local ids = {}\n"
        "  for i = 1, math.random(1, 10) do ids[i] = movies[math.random(#movies)] end\n"
        f"  return '{COLD_START_PATH}' .. table.concat(ids, ',')\n"
        "end\n"
    )


def wrk_client(url: str, users: list[int], concurrency: int, seconds: float, caching: bool = False, until=None) -> dict:
    """`seconds` of wrk, or until the event `until` is set (wrk prints its results on SIGINT).
    `users`: known user ids, or the Lua of another `next_path` (cold_start_path_lua)."""
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk, or use --tool python")
    script = (
        (users if isinstance(users, str) else user_path_lua(users)) + "local etag = nil\n"
        "request = function()\n"
        "  local path = next_path()\n"
        + ("  if etag then return wrk.format('GET', path, {['If-None-Match'] = etag}) end\n" if caching else "")
        + "  return wrk.format('GET', path)\n"
        "end\n"
        + (
            "response = function(status, headers, body)\n  if headers['etag'] then etag = headers['etag'] end\nend\n"
            if caching
            else ""
        )
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        wrk = subprocess.Popen(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", lua.name, url],
            stdout=subprocess.PIPE,
            text=True,
        )
        if until is not None:
            threading.Thread(target=lambda: until.wait(seconds) and wrk.send_signal(signal.SIGINT)).start()
        out, _ = wrk.communicate()

    def ms(label):
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
    }


def publish_command(db: Path, nice: int) -> list[str]:
    """`recjobs precompute` of the published run again, at CPU niceness `nice`: a real publish
    transaction (its rows deleted and written again, the pointer flipped, a new publish time, so
    a new ETag)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        run_id, artifacts_dir = conn.execute(
            "SELECT p.run_id, r.artifacts_dir FROM published_run AS p JOIN model_runs AS r USING (run_id)"
        ).fetchone()
    finally:
        conn.close()
    where = ["--db", str(db), "--artifacts", str(Path(artifacts_dir).parent), "--job-nice", str(nice)]
    return [sys.executable, "-m", "recjobs", "-q", "precompute", "--run-id", run_id, *where]


def measure(client, url, users, args, db: Path, publish_nice: int | None, caching: bool) -> dict:
    """Median requests/s, p50 and p99 of args.repeats runs. With publish_nice, each run starts a
    publish 1 s in and lasts until 0.5 s after the publish ends, so it covers the whole publish."""
    runs = []
    for _ in range(args.repeats):
        kwargs = {"caching": True} if caching else {}
        if publish_nice is None:
            runs.append(client(url, users, args.concurrency, args.seconds, **kwargs))
            continue
        done, exits = threading.Event(), []

        def publish(done=done, exits=exits):
            time.sleep(1.0)
            # its own session (so its own autogroup, as a nightly job from cron or Airflow): the
            # priority it lowers is its own, not the benchmark's or wrk's
            job = subprocess.run(publish_command(db, publish_nice), stdout=subprocess.DEVNULL, start_new_session=True)
            exits.append(job.returncode)
            time.sleep(0.5)
            done.set()

        publisher = threading.Thread(target=publish)
        publisher.start()
        run = client(url, users, args.concurrency, 600, until=done, **kwargs)
        publisher.join()
        if exits != [0]:
            sys.exit("a publish during the benchmark failed")
        runs.append(run)
    summary = {key: statistics.median(r[key] for r in runs) for key in ("rps", "p50_ms", "p99_ms")}
    return {
        **summary,
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "runs": runs,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("artifacts/recs.db"), help="published database (copied)")
    parser.add_argument("--tool", choices=["python", "wrk"], default="wrk")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes of the multi-process server"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    parser.add_argument("--cold-start-only", action="store_true", help="only the cold-start route's cases")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        sys.exit(f"{args.db}: no database; run `recjobs run` first (or pass --db)")
    client = wrk_client if args.tool == "wrk" else python_client
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        db = copy_db(args.db, Path(tmp) / "recs.db")
        users, new_users = user_ids(db), cold_start_path_lua(cold_start_movies(db))
        via_datasette = user_path_lua(users, DATASETTE_PATH)
        for workers in (1, args.workers):
            with running_server(db, Path(tmp) / f"serve-{workers}.log", workers=workers) as server:
                client(server.url, users, args.concurrency, 2)  # warm-up
                for name, publish, caching, asked in (
                    ("plain", None, False, users),
                    ("during a publish (job_nice 10, the default)", 10, False, users),
                    ("during a publish at normal priority (job_nice 0)", 0, False, users),
                    ("caching client (ETag, 304)", None, True, users),
                    ("plain, through datasette's query view (lookup lane off)", None, False, via_datasette),
                    ("during a publish, through datasette's query view (job_nice 10)", 10, False, via_datasette),
                    ("cold start, new users naming 1-10 movies (/recs/-/cold_start.json)", None, False, new_users),
                    ("cold start during a publish (job_nice 10)", 10, False, new_users),
                ):
                    if args.tool != "wrk" and (caching or isinstance(asked, str)):
                        continue
                    if args.cold_start_only and asked is not new_users:
                        continue
                    row = measure(client, server.url, asked, args, db, publish, caching)
                    results.append({"workers": workers, "case": name, **row})
                    print(
                        f"{workers} process(es), {name}: {row['rps']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, "
                        f"p99 {row['p99_ms']:.1f} ms, errors {row['errors']} of {row['requests']}",
                        flush=True,
                    )
    print(
        f"\n{args.tool}, concurrency {args.concurrency}, {len(users)} users, "
        f"median of {args.repeats} x {args.seconds:.0f} s"
    )
    print("| server | case | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workers']} process{'es' if r['workers'] > 1 else ''} | {r['case']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['errors']} of {r['requests']} |"
        )
    one = {r["case"]: r for r in results if r["workers"] == 1}
    for r in results:
        if r["workers"] != 1:
            print(f"{r['case']}: {r['rps'] / one[r['case']]['rps']:.2f}x the requests/s of one process")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
