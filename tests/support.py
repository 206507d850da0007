"""Helpers shared by the test files and the benchmarks: data sets, database copies, a real
`recjobs serve` on loopback, and Airflow's CLI with a private home. Fixtures live in conftest.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

REPO = Path(__file__).resolve().parent.parent


def doc_section(page: str, heading: str) -> str:
    """One section of README.md or a docs/ page: from the heading line to the next heading of
    the same or a higher level."""
    text = (REPO / page).read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    body = text.split(f"\n{heading}", 1)[1]
    stops = [body.find(f"\n{'#' * n} ") for n in range(1, len(level) + 1)]
    stops = [s for s in stops if s >= 0]
    return body[: min(stops)] if stops else body


SHARED_DATA = Path(os.environ.get("RECJOBS_TEST_DATA", REPO.parent / "shared" / "data" / "ml-latest-small"))


# ---- data sets ------------------------------------------------------------------------------

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation
2,Jumanji (1995),Adventure|Children
3,Heat (1995),Action|Crime
4,Alien (1979),Horror|Sci-Fi
5,Aliens (1986),Action|Sci-Fi
6,Amelie (2001),Comedy|Romance
"""
LINKS = """movieId,imdbId,tmdbId
1,0114709,862
2,0113497,8844
3,0113277,949
4,0078748,348
5,0090605,679
6,0211915,
"""
TAGS = """userId,movieId,tag,timestamp
1,1,pixar,1000
"""


def write_dataset(folder: Path, ratings: str, movies: str = MOVIES, links: str = LINKS, tags: str = TAGS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_text(movies)
    (folder / "links.csv").write_text(links)
    (folder / "tags.csv").write_text(tags)
    (folder / "ratings.csv").write_text(ratings)
    return folder


def tiny_ratings() -> str:
    """Four users, six movies; every user has at least two positives."""
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, 5):
        for movie in range(1, 7):
            if (user + movie) % 3 != 0:
                rows.append(
                    f"{user},{movie},{4.0 if (user * movie) % 2 else 3.0 + (movie % 2)},{1000 + 10 * movie + user}"
                )
    return "\n".join(rows) + "\n"


def require_shared_data() -> Path:
    if not (SHARED_DATA / "ratings.csv").is_file():
        pytest.fail(f"ml-latest-small not found at {SHARED_DATA}; set RECJOBS_TEST_DATA")
    return SHARED_DATA


def damage_table(db: Path, table: str) -> int:
    """Overwrite every leaf page of one table with random bytes (the WAL checkpointed first).
    Returns how many pages were overwritten."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'", (table,))]
    finally:
        conn.close()
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(os.urandom(page_size))
    return len(pages)


def copy_db(source: Path, target: Path) -> Path:
    """A consistent copy of a (WAL) database, through SQLite's backup API."""
    import sqlite3

    target.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return target


def write_synthetic(folder: Path, rating_rows: list[str], n_items: int) -> Path:
    """A MovieLens-layout folder: `rating_rows` ("user,movie,rating,time") of movies 1..n_items."""
    movies = "".join(f"{m},Movie {m} (2000),Drama\n" for m in range(1, n_items + 1))
    links = "".join(f"{m},{m:07d},{m}\n" for m in range(1, n_items + 1))
    return write_dataset(
        folder,
        "userId,movieId,rating,timestamp\n" + "\n".join(rating_rows) + "\n",
        movies="movieId,title,genres\n" + movies,
        links="movieId,imdbId,tmdbId\n" + links,
        tags="userId,movieId,tag,timestamp\n",
    )


def checkerboard_dir(folder, n_users=40, n_items=20, seed=0, low_rated=0):
    """Users of group 0 rate movies 1-10, of group 1 movies 11-20, each all ten in a random
    order and all 5.0: the test item is the one group movie a user has not rated before it.
    With `low_rated`, a user's first that many group movies are rated 1.0 instead: the model
    (positives only) still scores them high, so only filtering every rated movie keeps them out."""
    rng = np.random.default_rng(seed)
    rows = ["userId,movieId,rating,timestamp"]
    half = n_items // 2
    for user in range(1, n_users + 1):
        group = user % 2
        for t, movie in enumerate(rng.permutation(half) + 1 + group * half):
            rows.append(f"{user},{movie},{1.0 if t < low_rated else 5.0},{1000 + 10 * t}")
    return write_synthetic(folder, rows[1:], n_items)


# ---- a real `recjobs serve` --------------------------------------------------------------


def checkerboard_settings(root: Path, **changes):
    """Settings of a quick model on the checkerboard data (40 users, 20 movies) under root."""
    from recjobs.settings import Settings

    return Settings(
        data_dir=checkerboard_dir(root / "data"),
        db=root / "recs.db",
        artifacts=root / "artifacts",
        factors=4,
        iterations=10,
        k=5,
        **changes,
    )


def small_published_settings(root: Path, run_id: str = "first"):
    """Settings of a database under root with one published run on the checkerboard data (40
    users, 20 movies): seconds, where a behaviour needs a published run but not MovieLens."""
    from recjobs import pipeline

    settings = checkerboard_settings(root, n_similar=3)
    assert pipeline.run(settings, run_id).precompute.status == "published"
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_digest(path: Path) -> str:
    """SHA-256 of the database file and its WAL (if any): changes if anything was written."""
    digest = hashlib.sha256()
    for part in (Path(path), Path(f"{path}-wal")):
        if part.exists():
            digest.update(part.read_bytes())
    return digest.hexdigest()


def stop(proc: subprocess.Popen) -> None:
    """Stop the process group started for proc, by pid: SIGTERM, wait, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path):
        self.proc, self.url, self.log_path = proc, url, log_path

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def rows(self, query: str, **params) -> list[dict]:
        """A canned query's rows as a plain list (?_shape=array)."""
        response = self.get(f"/recs/{query}.json", params={**params, "_shape": "array"})
        assert response.status_code == 200, (query, params, response.status_code, response.text[:300])
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_server(
    db: Path,
    log_path: Path,
    reporting: bool = False,
    port: int | None = None,
    workers: int = 2,
    artifacts: Path | None = None,
):
    """`recjobs serve` (`workers` processes) as a subprocess in its own process group; stopped by
    pid on exit. Without `artifacts` the cold-start route reads the folder model_runs records."""
    port = port or free_port()
    args = [sys.executable, "-m", "recjobs", "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--serve-workers", str(workers)] + (["--reporting"] if reporting else [])
    args += ["--artifacts", str(artifacts)] if artifacts else []
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", Path(log_path))
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"recjobs serve exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(server.url + "/recs/model_info.json", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"recjobs serve did not answer within 60 s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(proc)


def chromium(*args: str) -> str:
    """Run headless Chromium in its own process group; its stdout. The group is killed after."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium not found: install the Debian packages chromium and chromium-driver (.ci/run does)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # loopback only: no proxy, and every host name but 127.0.0.1 unresolvable
                "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--window-size=1280,900",
                "--hide-scrollbars",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=120)
        finally:
            stop(proc)  # and any renderer it left behind
    return out


ATTACK = Path(tempfile.gettempdir()) / f"recjobs-attack-{uuid.uuid4().hex}"  # must never be created
WRITE_SQL = [
    "DELETE FROM ratings",
    "UPDATE movies SET title = 'x'",
    "INSERT INTO published_run (id, run_id, published_at) VALUES (2, 'x', 'x')",
    "WITH gone AS (DELETE FROM ratings RETURNING *) SELECT * FROM gone",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    f"ATTACH DATABASE '{ATTACK}.db' AS attack",
    f"VACUUM INTO '{ATTACK}.db'",
    f"SELECT load_extension('{ATTACK}.so')",
    "SELECT 1; DELETE FROM ratings",
    "DROP TABLE published_run",
    "CREATE TABLE attack (x)",
    # these pass datasette's SELECT check; the read-only connection refuses them
    "WITH x AS (SELECT 1) DELETE FROM ratings",
    "WITH x AS (SELECT 1) INSERT INTO movies (movie_id, title, genres) VALUES (-1, 'x', 'x')",
    "WITH x AS (SELECT 1) UPDATE published_run SET run_id = 'x'",
    "WITH x AS (SELECT 1) REPLACE INTO published_run (id, run_id, published_at) VALUES (1, 'x', 'x')",
    "SELECT * FROM movies",  # arbitrary SQL, even a harmless one, is off in the default profile
]


# ---- Airflow's CLI with a private home ------------------------------------------------------

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
DAGS = REPO / "dags"
NIGHTLY_TASKS = [
    "load",
    "split",
    "train",
    "evaluate",
    "plan_shards",
    "score_shard",
    "precompute",
    "evaluate_cold_start",
]
# task -> the tasks right after it; score_shard is mapped over the user ranges, beside evaluate
NIGHTLY_EDGES = {
    "load": ["split"],
    "split": ["train"],
    "train": ["evaluate", "plan_shards", "score_shard"],
    "plan_shards": ["score_shard"],
    "evaluate": ["precompute"],
    "score_shard": ["precompute"],
    "precompute": ["evaluate_cold_start"],
}
# Small model settings keep each run short; the steps and tables are the same as the defaults'.
SMALL_RUN = {"factors": 16, "iterations": 5, "k": 10}
SLICE_USERS = 150  # the slice of ml-latest-small for the runs that only need a run to happen


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def airflow_env(home: Path, root: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The project's airflow.env with a private AIRFLOW_HOME and database, artifacts and data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECJOBS_", "MOVIE_RECS_"))}
    env.update(read_env_file(REPO / "airflow.env"))
    env.update(
        PATH=f"{AIRFLOW_BIN.parent}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY="1",  # the project waits 120 s between tries
        RECJOBS_DB=str(root / "recs.db"),
        RECJOBS_ARTIFACTS=str(root / "artifacts"),
        RECJOBS_DATA_DIR=str(data_dir),
        RECJOBS_JOB_NICE="0",  # as tests/conftest.py: the suite's jobs and servers share the cores as equals
    )
    env.update(extra)
    return env


def airflow(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the airflow CLI in its own process group; the group is killed by pid if it overruns."""
    proc = subprocess.Popen(
        [str(AIRFLOW_BIN), *args],
        env=env,
        cwd=env["AIRFLOW_HOME"],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def migrate(env: dict) -> None:
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    done = airflow(env, "db", "migrate")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]


def query(db: Path, sql: str, *args):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def served(db: Path) -> list[tuple]:
    """What readers are served: the current run and its recommendations."""
    return query(
        db,
        "SELECT p.run_id, r.user_id, r.rank, r.movie_id, r.score FROM published_run AS p "
        "JOIN recommendations AS r ON r.run_id = p.run_id ORDER BY r.user_id, r.rank",
    )


def movielens_slice(target: Path) -> Path:
    """ml-latest-small with the ratings of its first SLICE_USERS users only."""
    source = require_shared_data()
    target.mkdir(parents=True)
    for name in ("movies.csv", "links.csv", "tags.csv"):
        shutil.copy(source / name, target / name)
    lines = (source / "ratings.csv").read_text().splitlines(keepends=True)
    (target / "ratings.csv").write_text(
        lines[0] + "".join(line for line in lines[1:] if int(line.split(",", 1)[0]) <= SLICE_USERS)
    )
    return target


def new_airflow_home(migrated: Path, home: Path) -> Path:
    """A private AIRFLOW_HOME with a copy of an already migrated metadata database."""
    home.mkdir(parents=True)
    shutil.copy(migrated / "airflow.db", home / "airflow.db")
    return home


def dags_test(
    home: Path,
    root: Path,
    conf: dict,
    data_dir: Path,
    fault: str = "",
    dag_id: str = "movie_recs_nightly",
    **extra_env: str,
):
    """`airflow dags test` (Dag.test) on the database and artifacts under root; (process, seconds)."""
    env = airflow_env(home, root, data_dir, MOVIE_RECS_FAULT=fault, **extra_env)
    started = time.perf_counter()
    done = airflow(env, "dags", "test", dag_id, "-c", json.dumps(conf))
    return done, time.perf_counter() - started


def last_dag_run(home: Path, dag_id: str = "movie_recs_nightly") -> tuple[str, str]:
    return query(
        home / "airflow.db", "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", dag_id
    )[0]


def tries(home: Path, airflow_run_id: str) -> dict[str, tuple[int, str]]:
    rows = query(
        home / "airflow.db", "SELECT task_id, try_number, state FROM task_instance WHERE run_id = ?", airflow_run_id
    )
    return {task_id: (n, state) for task_id, n, state in rows}


def mapped_tries(home: Path, airflow_run_id: str, task_id: str) -> dict[int, tuple[int, str]]:
    """map index -> (try number, state) of a mapped task's instances."""
    rows = query(
        home / "airflow.db",
        "SELECT map_index, try_number, state FROM task_instance WHERE run_id = ? AND task_id = ?",
        airflow_run_id,
        task_id,
    )
    return {index: (n, state) for index, n, state in rows}


def newest_run(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM model_runs ORDER BY started_at DESC, run_id DESC LIMIT 1").fetchone())


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """A folder that build(folder) fills once per test session, shared by the pytest-xdist
    workers of the session (under a file lock); a private one without xdist."""
    import fcntl

    if worker_id == "master":
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    base = tmp_path_factory.getbasetemp().parent  # this session's folder, above the workers'
    folder = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def migrated_airflow_home(tmp_path_factory, worker_id: str) -> Path:
    """An AIRFLOW_HOME whose metadata database `airflow db migrate` created, to copy from."""
    return built_once(
        tmp_path_factory, worker_id, "airflow_migrated", lambda home: migrate(airflow_env(home, home, home))
    )


def nightly_dir(folder: Path, n_users: int = 60, n_items: int = 30, days: int = 200, seed: int = 0) -> Path:
    """Ratings over `days` days by two taste groups (even users like movies 1-15, odd users
    16-30, each rated 5.0; the other group's movies 1.0 now and then), a rating every few
    days per user: a model of the groups beats popularity on the days after any night."""
    rng = np.random.default_rng(seed)
    rows = ["userId,movieId,rating,timestamp"]
    half = n_items // 2
    start = 1_500_000_000
    for user in range(1, n_users + 1):
        liked = rng.permutation(half) + 1 + (user % 2) * half
        times = np.sort(rng.uniform(0, days * 86_400, len(liked)))
        for movie, t in zip(liked, times, strict=True):
            rows.append(f"{user},{movie},5.0,{start + int(t)}")
        other = rng.choice(half, 2, replace=False) + 1 + (1 - user % 2) * half
        for movie in other:
            rows.append(f"{user},{movie},1.0,{start + int(rng.uniform(0, days * 86_400))}")
    return write_synthetic(folder, rows[1:], n_items)


def ring_dir(folder: Path, n_users: int = 60, n_items: int = 30, length: int = 8, seed: int = 0) -> Path:
    """Movies on a ring; each user rates `length` consecutive ones, in ring order, all 5.0,
    starting anywhere. The movie that comes next is the one rated right after the user's
    last: a sequence signal that plain co-rating cannot tell from the movie before the first."""
    rng = np.random.default_rng(seed)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, n_users + 1):
        start = rng.integers(n_items)
        for t in range(length):
            rows.append(f"{user},{(start + t) % n_items + 1},5.0,{1000 + 10 * t + user}")
    return write_synthetic(folder, rows[1:], n_items)


class Processes:
    """Airflow components, each in its own process group; stop() ends all of them and
    whatever they started, by pid."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.started = env, logs, []

    def start(self, *args: str, log_name: str | None = None, env: dict | None = None) -> None:
        """Start `airflow <args>`; its output goes to logs/<log_name or args[0]>.log."""
        self.run(log_name or args[0], [str(AIRFLOW_BIN), *args], env)

    def run(self, name: str, command: list[str], env: dict | None = None, cwd: Path | None = None):
        """Start any program in its own process group, its output to logs/<name>.log."""
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(
            command,
            env=env or self.env,
            cwd=cwd or self.env["AIRFLOW_HOME"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append((process, log))
        return process

    def tails(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-2500:]}" for path in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        family = []
        for process, _ in self.started:
            try:
                family += psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for process, _ in self.started:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process, log in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            log.close()
        _, alive = psutil.wait_procs(family, timeout=10)
        for leftover in alive:  # e.g. an api-server worker that left the group
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)


def wait_for(what: str, check, timeout: float, processes: Processes, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except requests.ConnectionError:
            result = None
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout} s\n{processes.tails()}")


def fad_ratings(
    n_users: int = 300, n_items: int = 80, days: int = 120, fads_from_day: float = 0, seed: int = 0
) -> dict[str, np.ndarray]:
    """Rating arrays (user_id, movie_id, rating, rated_at) of two taste groups, each user active
    on a few days spread over `days`. Before `fads_from_day` a user likes two of their group's
    movies per active day; from it on, movies 1-60 are the groups' and every week three of the
    fad movies 61-80 are the fad: an active user likes the week's fad and one of their group's.
    So what was liked in the last days predicts the next days only from `fads_from_day` on."""
    rng = np.random.default_rng(seed)
    start = 1_500_000_000
    half = 30
    rows = []
    for user in range(1, n_users + 1):
        group = np.arange(1, half + 1) + (user % 2) * half
        seen = set()
        for day in np.sort(rng.uniform(0, days, 8)):
            week = int(day // 7)
            if day >= fads_from_day:
                fad = 61 + (np.random.default_rng(1000 + week).permutation(n_items - 60)[:3])
                picks = [*fad, rng.choice(group)]
            else:
                picks = list(rng.choice(group, 2, replace=False))
            for k, movie in enumerate(picks):
                if int(movie) not in seen:
                    seen.add(int(movie))
                    rows.append((user, int(movie), 5.0, start + int(day * 86_400) + 60 * k))
    user, movie, rating, rated_at = (np.array(c) for c in zip(*rows, strict=True))
    return {
        "user_id": user.astype(np.int32),
        "movie_id": movie.astype(np.int32),
        "rating": rating.astype(np.float32),
        "rated_at": rated_at.astype(np.int64),
    }
