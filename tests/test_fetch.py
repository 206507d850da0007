"""fetch-data: download (from a loopback server here) or copy, and check SHA-256."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import zipfile

import pytest

from recjobs.errors import DataError
from recjobs.jobs.fetch import ML_LATEST_SMALL_SHA256, fetch_data
from support import require_shared_data


@pytest.fixture
def zip_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; stopped at the end."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def make_zip(path, tamper: str | None = None):
    source = require_shared_data()
    with zipfile.ZipFile(path, "w") as z:
        for name in ML_LATEST_SMALL_SHA256:
            data = (source / name).read_bytes()
            if name == tamper:
                data = data.replace(b"4.0", b"4.5", 1)
            z.writestr(f"ml-latest-small/{name}", data)


def test_download_and_check(zip_server, tmp_path):
    www, base = zip_server
    make_zip(www / "ml-latest-small.zip")
    result = fetch_data(tmp_path / "data", f"{base}/ml-latest-small.zip")
    assert set(ML_LATEST_SMALL_SHA256) <= set(result.files)
    assert (tmp_path / "data" / "ratings.csv").read_bytes() == (require_shared_data() / "ratings.csv").read_bytes()


def test_tampered_download_is_refused_and_nothing_written(zip_server, tmp_path):
    www, base = zip_server
    make_zip(www / "bad.zip", tamper="ratings.csv")
    with pytest.raises(DataError, match="ratings.csv has SHA-256 .*, expected 80da8b33"):
        fetch_data(tmp_path / "data", f"{base}/bad.zip")
    assert not (tmp_path / "data").exists()


def test_missing_download(zip_server, tmp_path):
    _, base = zip_server
    with pytest.raises(DataError, match="download failed"):
        fetch_data(tmp_path / "data", f"{base}/nope.zip")


def test_copy_from_local_folder(tmp_path):
    result = fetch_data(tmp_path / "data", source_dir=require_shared_data())
    assert "README.txt" in result.files
    with pytest.raises(DataError, match="not found"):
        fetch_data(tmp_path / "data2", source_dir=tmp_path / "empty")


def test_download_of_non_zip(zip_server, tmp_path):
    www, base = zip_server
    (www / "page.zip").write_bytes(io.BytesIO(b"<html>not a zip</html>").getvalue())
    with pytest.raises(DataError, match="not a zip archive"):
        fetch_data(tmp_path / "data", f"{base}/page.zip")
