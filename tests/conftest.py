"""Shared fixtures: tiny hand-made data, the real ml-latest-small, built databases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recjobs import pipeline  # noqa: E402
from recjobs.settings import Settings  # noqa: E402
from support import checkerboard_dir, copy_db, require_shared_data, tiny_ratings, write_dataset  # noqa: E402


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    return write_dataset(tmp_path / "data", tiny_ratings())


@pytest.fixture
def tiny_settings(tmp_path, tiny_dir) -> Settings:
    return Settings(
        data_dir=tiny_dir,
        db=tmp_path / "recs.db",
        artifacts=tmp_path / "artifacts",
        factors=4,
        iterations=3,
        k=3,
        n_similar=2,
    )


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


@pytest.fixture
def published_copy(tmp_path, published_settings) -> Settings:
    """A private copy of the published ml-latest-small database, safe to change."""
    return published_settings.replace(
        db=copy_db(published_settings.db, tmp_path / "recs.db"), artifacts=tmp_path / "artifacts"
    )


@pytest.fixture
def small_published(tmp_path) -> Settings:
    """A database with one published run ("first") on the checkerboard data (40 users, 20
    movies): seconds, where a behaviour needs a published run but not MovieLens."""
    settings = Settings(
        data_dir=checkerboard_dir(tmp_path / "data"),
        db=tmp_path / "recs.db",
        artifacts=tmp_path / "artifacts",
        factors=4,
        iterations=10,
        k=5,
        n_similar=3,
    )
    assert pipeline.run(settings, "first").precompute.status == "published"
    return settings
