"""Benchmark of `recjobs serve`: recommendations_for_user for random users at concurrency 8.

Starts `recjobs serve` (default profile) on --db unless --url names a running server, then
drives it from this process (Python threads, one keep-alive connection each) or with wrk
(`--tool wrk`, Debian package wrk). Prints requests per second and p50/p99 latency of
each repeat and their medians.

    python tests/benchmarks/bench_serve.py --db artifacts/recs.db            # or: make bench-serve
    python tests/benchmarks/bench_serve.py --url http://127.0.0.1:8001 --tool wrk
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support import running_server  # noqa: E402

PATH = "/recs/recommendations_for_user.json?user_id={}&k=10&_shape=array"


def user_ids(db: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT r.user_id FROM published_run AS p JOIN recommendations AS r ON r.run_id = p.run_id"
            )
        ]
    finally:
        conn.close()


def python_client(url: str, users: list[int], concurrency: int, seconds: float) -> dict:
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
    time.sleep(seconds)
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


def wrk_client(url: str, users: list[int], concurrency: int, seconds: float) -> dict:
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk, or use --tool python")
    script = (
        "local users = {" + ",".join(map(str, users)) + "}\n"
        "request = function()\n"
        f"  return wrk.format('GET', string.format('{PATH.replace('{}', '%d')}', users[math.random(#users)]))\n"
        "end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", lua.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def ms(label):
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("artifacts/recs.db"), help="published database")
    parser.add_argument("--url", help="a running server to drive instead of starting one")
    parser.add_argument("--tool", choices=["python", "wrk"], default="python")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.db.is_file():
        sys.exit(f"{args.db}: no database; run `recjobs run` first (or pass --db)")
    users = user_ids(args.db)
    client = wrk_client if args.tool == "wrk" else python_client
    with tempfile.TemporaryDirectory() as tmp:
        server = nullcontext(None) if args.url else running_server(args.db, Path(tmp) / "serve.log")
        with server as started:
            url = args.url or started.url
            client(url, users, args.concurrency, 2)  # warm-up
            runs = [client(url, users, args.concurrency, args.seconds) for _ in range(args.repeats)]
    for i, run in enumerate(runs, 1):
        print(
            f"repeat {i}: {run['requests']} requests, {run['errors']} errors, {run['rps']:.0f} req/s, "
            f"p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms"
        )
    summary = {key: statistics.median(r[key] for r in runs) for key in ("rps", "p50_ms", "p99_ms")}
    print(
        f"median of {len(runs)} x {args.seconds:.0f} s, {args.tool} client, concurrency {args.concurrency}, "
        f"{len(users)} users: {summary['rps']:.0f} req/s, p50 {summary['p50_ms']:.1f} ms, "
        f"p99 {summary['p99_ms']:.1f} ms"
    )
    print(json.dumps({"tool": args.tool, "concurrency": args.concurrency, **summary, "runs": runs}))


if __name__ == "__main__":
    main()
