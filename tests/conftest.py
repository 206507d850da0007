"""Shared fixtures: tiny hand-made data, the real ml-latest-small, built databases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RECJOBS_JOB_NICE", "0")  # the suite's jobs share the 2 cores with its servers as equals

from recjobs import pipeline  # noqa: E402
from recjobs.settings import Settings  # noqa: E402
from support import built_once, copy_db, require_shared_data, small_published_settings, tiny_ratings, write_dataset  # noqa: E402


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
def published_settings(tmp_path_factory, worker_id):
    """Settings of a database with one published run ("first") on ml-latest-small, default
    settings; built once per session for all workers. Read-only for tests: copy the database
    before changing it."""

    def build(root):
        data = shutil.copytree(require_shared_data(), root / "ml-latest-small")
        settings = Settings(data_dir=data, db=root / "recs.db", artifacts=root / "artifacts")
        assert pipeline.run(settings, "first").precompute.status == "published"

    root = built_once(tmp_path_factory, worker_id, "published", build)
    return Settings(data_dir=root / "ml-latest-small", db=root / "recs.db", artifacts=root / "artifacts")


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
    return small_published_settings(tmp_path)
