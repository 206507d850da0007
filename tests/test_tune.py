"""tune: the search sees only the train part and the validation items."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from recjobs.cli import cli
from recjobs.evaluation.holdout import TRAIN, VAL
from recjobs.jobs import tune
from recjobs.method import model
from recjobs.settings import Settings
from support import checkerboard_dir, ring_dir

SMALL_GRID = {"blend_weight": (0.0, 0.5), "sequence_weight": (0.0, 1.0)}


def small_settings(data_dir, tmp_path):
    return Settings(
        data_dir=data_dir,
        artifacts=tmp_path / "artifacts",
        db=tmp_path / "recs.db",
        factors=4,
        iterations=5,
        blend_weight=0.5,
        sequence_weight=1.0,
    )


def test_validation_data_is_the_train_part_and_targets_are_the_validation_items(tmp_path):
    settings = small_settings(checkerboard_dir(tmp_path / "data"), tmp_path)
    task = tune.validation_task(settings, (42,))
    data = task.data(settings)
    rows = model.index(task.ratings["user_id"], task.user_ids)
    cols = model.index(task.ratings["movie_id"], task.movie_ids)
    later = task.parts != TRAIN
    assert later.sum() == 40 * 2  # checkerboard: the validation and the test item of every user
    for matrix in (data.confidence, data.seen, data.profile, data.recent):
        assert np.all(np.asarray(matrix[rows[later], cols[later]]).ravel() == 0)
    val = task.parts == VAL
    assert sorted(zip(task.rows, task.items, strict=True)) == sorted(zip(rows[val], cols[val], strict=True))


def test_search_finds_the_known_answer_and_writes_its_tables(tmp_path):
    settings = small_settings(checkerboard_dir(tmp_path / "data"), tmp_path)
    result = tune.tune(settings, tmp_path / "out", passes=1, seeds=(42,), grid=SMALL_GRID)
    assert result.validation_recall_at_10 == 1.0
    assert result.validation_recall_at_10_ci == (1.0, 1.0)
    assert set(result.best) == set(SMALL_GRID)
    saved = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert saved["best"] == result.best and saved["n_validation_users"] == 40
    assert len(saved["trials"]) == result.n_candidates == 3  # start, then one new value per setting
    assert "| blend_weight | sequence_weight | Recall@10 | NDCG@10 |" in (tmp_path / "out" / "tune.md").read_text()


def test_search_prefers_the_setting_that_finds_what_comes_next(tmp_path):
    """Movies on a ring, rated in ring order: only the sequence part tells the next movie from
    the one before the user's first; ALS alone misses it. A search that cannot tell them apart,
    or a sequence part that does not work, fails here."""
    settings = small_settings(ring_dir(tmp_path / "data", n_users=150, n_items=100), tmp_path)
    settings = settings.replace(blend_weight=0.0, sequence_weight=0.0)
    result = tune.tune(settings, tmp_path / "out", passes=1, seeds=(42,), grid=SMALL_GRID)
    assert result.best == {"blend_weight": 0.5, "sequence_weight": 1.0}
    assert result.start_recall_at_10 < 0.9 <= result.validation_recall_at_10
    trials = {
        (t["blend_weight"], t["sequence_weight"]): t
        for t in json.loads((tmp_path / "out" / "tune.json").read_text())["trials"]
    }
    assert trials[(0.5, 1.0)]["ndcg_at_10"] > trials[(0.5, 0.0)]["ndcg_at_10"] + 0.03


def test_search_does_not_depend_on_the_test_items(tmp_path):
    """Replacing every user's test item by a movie of the other group changes nothing the search sees."""
    original = checkerboard_dir(tmp_path / "a")
    changed = checkerboard_dir(tmp_path / "b")
    ratings = pd.read_csv(changed / "ratings.csv")
    last = ratings.groupby("userId")["timestamp"].transform("max") == ratings["timestamp"]
    ratings.loc[last, "movieId"] = np.where(ratings.loc[last, "userId"] % 2 == 0, 15, 5)
    ratings.to_csv(changed / "ratings.csv", index=False)

    results = []
    for data_dir in (original, changed):
        out = tmp_path / f"out-{data_dir.name}"
        tune.tune(small_settings(data_dir, tmp_path), out, passes=1, seeds=(42,), grid=SMALL_GRID)
        results.append(json.loads((out / "tune.json").read_text())["trials"])
    assert results[0] == results[1]


def test_tune_command(tmp_path, tiny_dir):
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "tune",
            "--data-dir",
            str(tiny_dir),
            "--iterations",
            "2",
            "--passes",
            "1",
            "--output",
            str(tmp_path / "out"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)["best"]
    assert set(best) == set(tune.GRID)
    assert all(best[name] in values for name, values in tune.GRID.items())
    bad = CliRunner().invoke(
        cli, ["tune", "--data-dir", str(tmp_path / "missing"), "--artifacts", str(tmp_path / "bad-artifacts")]
    )
    assert bad.exit_code == 1 and "data folder not found" in bad.output
    assert not (tmp_path / "bad-artifacts").exists()  # nothing written for bad input
