"""fetch-data: download MovieLens ml-latest-small (or copy a local copy) and check it."""

from __future__ import annotations

import hashlib
import io
import logging
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)

ML_LATEST_SMALL_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
# SHA-256 of the files of ml-latest-small (the 2018 release GroupLens still serves).
ML_LATEST_SMALL_SHA256 = {
    "links.csv": "028a4a1d17751ca9276e0e0718cfc22356350f224a996e1ec348c23274b9209d",
    "movies.csv": "c47b783f23eb304413307e1bb05335e427737da20ec8d3c0e96335567dd5f3dc",
    "ratings.csv": "80da8b3393dae325bbba5a31f291a6ba55d8d4f4396de3c456f2c1635b1b70e8",
    "tags.csv": "68eec00a0820c2faa8863a6df7032f13d5899a4462bce9a97213905297ff3d34",
}


@dataclass(frozen=True)
class FetchResult:
    data_dir: str
    source: str
    files: tuple[str, ...]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_data(
    data_dir: Path, url: str = ML_LATEST_SMALL_URL, source_dir: Path | None = None, timeout: float = 60
) -> FetchResult:
    """Put checked ml-latest-small CSVs into data_dir: from `source_dir` if given, else from `url`."""
    files = {}
    if source_dir is not None:
        source = str(source_dir)
        for name in ML_LATEST_SMALL_SHA256:
            path = Path(source_dir) / name
            if not path.is_file():
                raise DataError(f"{path}: not found; expected a copy of ml-latest-small with {name}")
            files[name] = path.read_bytes()
        readme = Path(source_dir) / "README.txt"
        if readme.is_file():
            files["README.txt"] = readme.read_bytes()
    else:
        source = url
        log.info("fetch-data: downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                archive = response.read()
        except OSError as e:
            raise DataError(
                f"{url}: download failed ({e}); expected the MovieLens zip (or use --from with a local copy)"
            ) from None
        try:
            with zipfile.ZipFile(io.BytesIO(archive)) as z:
                for member in z.namelist():
                    name = Path(member).name
                    if name in ML_LATEST_SMALL_SHA256 or name == "README.txt":
                        files[name] = z.read(member)
        except zipfile.BadZipFile:
            raise DataError(f"{url}: not a zip archive; expected ml-latest-small.zip") from None
    for name, expected in ML_LATEST_SMALL_SHA256.items():
        if name not in files:
            raise DataError(f"{source}: {name} is missing; expected the ml-latest-small files")
        if sha256(files[name]) != expected:
            raise DataError(f"{source}: {name} has SHA-256 {sha256(files[name])}, expected {expected}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        tmp = data_dir / f".{name}.part"
        tmp.write_bytes(content)
        tmp.replace(data_dir / name)
    log.info("fetch-data: %d checked files in %s", len(files), data_dir)
    return FetchResult(str(data_dir), source, tuple(sorted(files)))
