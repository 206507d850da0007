"""Shared fixtures: tiny hand-made data, the real ml-latest-small, built databases."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recjobs import pipeline  # noqa: E402
from recjobs.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RECJOBS_TEST_DATA", REPO.parent / "shared" / "data" / "ml-latest-small"))

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
                rows.append(f"{user},{movie},{4.0 if (user * movie) % 2 else 3.0 + (movie % 2)},{1000 + 10 * movie + user}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    return write_dataset(tmp_path / "data", tiny_ratings())


@pytest.fixture
def tiny_settings(tmp_path, tiny_dir) -> Settings:
    return Settings(data_dir=tiny_dir, db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts",
                    factors=4, iterations=3, k=3, n_similar=2)


def require_shared_data() -> Path:
    if not (SHARED_DATA / "ratings.csv").is_file():
        pytest.fail(f"ml-latest-small not found at {SHARED_DATA}; set RECJOBS_TEST_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory) -> Path:
    """A private copy of ml-latest-small (tests may add incoming/ files to their own copies)."""
    target = tmp_path_factory.mktemp("ml") / "ml-latest-small"
    shutil.copytree(require_shared_data(), target)
    return target


@pytest.fixture(scope="session")
def published_settings(tmp_path_factory, movielens_dir):
    """Settings of a database with one published run on ml-latest-small. Read-only for tests:
    copy the database before changing it."""
    root = tmp_path_factory.mktemp("published")
    settings = Settings(data_dir=movielens_dir, db=root / "recs.db", artifacts=root / "artifacts")
    result = pipeline.run(settings, "first")
    assert result.precompute.status == "published"
    return settings


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


@pytest.fixture
def published_copy(tmp_path, published_settings) -> Settings:
    """A private copy of the published ml-latest-small database, safe to change."""
    return published_settings.replace(db=copy_db(published_settings.db, tmp_path / "recs.db"),
                                      artifacts=tmp_path / "artifacts")
