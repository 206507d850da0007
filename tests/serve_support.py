"""Helpers of the serving tests and benchmark: a real `recjobs serve` on a free loopback port."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


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
def running_server(db: Path, log_path: Path, reporting: bool = False, port: int | None = None):
    """`recjobs serve` as a subprocess in its own process group; stopped by pid on exit."""
    port = port or free_port()
    args = [sys.executable, "-m", "recjobs", "serve", "--db", str(db), "--host", "127.0.0.1",
            "--port", str(port)] + (["--reporting"] if reporting else [])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", Path(log_path))
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"recjobs serve exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(server.url + "/-/versions.json", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"recjobs serve did not answer within 60 s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(proc)
