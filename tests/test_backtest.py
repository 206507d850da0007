"""backtest: nightly replays scored on what users rated after each night."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from recjobs.cli import cli
from recjobs.errors import ConfigError
from recjobs.evaluation import peers
from recjobs.jobs import backtest as bt
from recjobs.settings import Settings
from recjobs.storage.movielens import read_catalog
from support import nightly_dir, write_dataset

SMALL = {"factors": 4, "iterations": 5, "item_neighbours": 20}


@pytest.fixture
def nightly(tmp_path) -> Settings:
    return Settings(
        data_dir=nightly_dir(tmp_path / "data"), db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts", **SMALL
    )


def test_cutoffs_are_distinct_nights_at_0230_utc_inside_the_period():
    rated_at = np.arange(1_500_000_000, 1_500_000_000 + 400 * bt.DAY, 3_600)
    cutoffs = bt.nightly_cutoffs(rated_at, 10, window_days=30)
    assert len(cutoffs) == 10 and len(set(cutoffs)) == 10
    assert all((c - bt.NIGHT) % bt.DAY == 0 for c in cutoffs)
    assert cutoffs[0] >= np.quantile(rated_at, 0.75) - bt.DAY
    assert cutoffs[-1] + 30 * bt.DAY <= rated_at.max()  # every window is whole
    earlier = bt.nightly_cutoffs(rated_at, 5, window_days=30, period=(0.25, 0.5))
    assert earlier[-1] + 30 * bt.DAY <= np.quantile(rated_at, 0.5) < cutoffs[0]


def test_targets_are_later_positives_of_known_users_and_known_movies(tmp_path):
    """Night T = day 10 at 02:30. Users 1-4 rated before it; after it user 1 likes movie 5
    (counted), rates movie 6 low (not a positive), user 9 is new and movie 7 is new (neither
    counted), and user 2 likes movie 4 after the window (not counted)."""
    t0 = 1_500_000_000
    night = bt.night_before(t0 + 10 * bt.DAY)
    before = [(u, m, 5.0, t0 + (u + m) * 3_600) for u in range(1, 5) for m in range(1, 7) if (u + m) % 4]
    after = [
        (1, 5, 4.5, night + 3_600),
        (1, 6, 2.0, night + 7_200),
        (9, 1, 5.0, night + 3_600),
        (3, 7, 5.0, night + 3_600),
        (2, 4, 5.0, night + 40 * bt.DAY),
    ]
    before = [r for r in before if (r[0], r[1]) not in {(1, 5), (1, 6), (2, 4)}]
    rows = "\n".join(f"{u},{m},{r},{t}" for u, m, r, t in before + after)
    movies = "movieId,title,genres\n" + "".join(f"{m},M{m} (2000),Drama\n" for m in range(1, 8))
    folder = write_dataset(
        tmp_path / "d",
        "userId,movieId,rating,timestamp\n" + rows + "\n",
        movies=movies,
        links="movieId,imdbId,tmdbId\n",
        tags="userId,movieId,tag,timestamp\n",
    )
    ratings = bt.rating_arrays(read_catalog(folder))
    users, per_user, _ = bt.one_night(
        ratings, night, Settings(**SMALL), window_days=30, recent_days=30, ease_lambda=10.0
    )
    assert users.tolist() == [1]
    # 4 unrated movies are known at T and user 1 has one target: every list of 10 finds it
    assert {name: values[0, 0] for name, values in per_user.items()} == dict.fromkeys(bt.MODELS, 1.0)


def test_nothing_after_the_window_changes_a_night(nightly):
    ratings = bt.rating_arrays(read_catalog(nightly.data_dir))
    night = int(bt.nightly_cutoffs(ratings["rated_at"], 1, window_days=20)[0])
    chooses = nightly.replace(choice_min_user_windows=5, choice_window_days=20)
    users, per_user, choice = bt.one_night(ratings, night, chooses, 20, 30, ease_lambda=10.0)
    assert choice.protocol == "temporal"  # the night chose (or kept) its blend on its own past
    later = ratings["rated_at"] >= night + 20 * bt.DAY
    changed = {k: v.copy() for k, v in ratings.items()}
    changed["rating"][later] = 6.0 - changed["rating"][later]  # likes become dislikes and back
    users2, per_user2, choice2 = bt.one_night(changed, night, chooses, 20, 30, ease_lambda=10.0)
    assert users.tolist() == users2.tolist() and len(users) > 5
    assert choice.weights == choice2.weights and choice.grid == choice2.grid
    for name in bt.MODELS:
        np.testing.assert_array_equal(per_user[name], per_user2[name])
    # and the choice reads nothing after the night either: ratings inside the window changed too
    inside = ratings["rated_at"] >= night
    changed["rating"][inside] = 6.0 - ratings["rating"][inside]
    assert bt.one_night(changed, night, chooses, 20, 30, ease_lambda=10.0)[2].grid == choice.grid


def test_the_method_beats_popularity_on_taste_groups_and_the_figures_are_stored(nightly, tmp_path):
    from recjobs.jobs.load import load

    load(nightly, "r1")
    runner = CliRunner()
    out = tmp_path / "bt"
    result = runner.invoke(
        cli,
        [
            "backtest",
            "--data-dir",
            str(nightly.data_dir),
            "--db",
            str(nightly.db),
            "--factors",
            "4",
            "--iterations",
            "5",
            "--item-neighbours",
            "20",
            "--nights",
            "4",
            "--window-days",
            "20",
            "--output",
            str(out),
            "--run-id",
            "r1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_user_nights"] > 40 and len(data["cutoffs"]) == 4
    recall = data["recall_at_10"]
    assert recall["model"] > recall["popularity"] + 0.1 and recall["model"] > recall["recent_popularity"] + 0.1
    gain, low, _ = data["recall_gain"]["popularity"]
    assert low > 0 and gain == pytest.approx(recall["model"] - recall["popularity"])
    report = (out / "report.md").read_text()
    assert "| the method (blend chosen each night) |" in report and "| EASE (peer) |" in report
    assert set(data["recall_at_10"]) == set(bt.MODELS) and data["ease_lambda"] in peers.EASE_LAMBDAS
    assert set(data["ndcg_gain"]) == set(bt.BASELINES + bt.PEERS) and len(data["choices"]) == 4
    assert (out / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["result"]["recall_at_10"] == recall
    con = sqlite3.connect(nightly.db)
    rows = dict(con.execute("SELECT metric, value FROM run_metrics WHERE run_id = 'r1' AND segment = 'backtest'"))
    assert rows["recall_at_10"] == pytest.approx(recall["model"])
    nights = con.execute("SELECT count(DISTINCT segment) FROM run_metrics WHERE segment LIKE 'backtest:%'").fetchone()
    assert nights == (4,)


def test_bad_arguments_are_one_line_errors(nightly):
    with pytest.raises(ConfigError, match="expected at least 1 night"):
        bt.backtest(nightly, nights=0)
    result = CliRunner().invoke(cli, ["backtest", "--data-dir", str(nightly.data_dir), "--window-days", "0"])
    assert result.exit_code == 2 and "window-days" in result.output
    with pytest.raises(ConfigError, match="a period 0 <= from < to <= 1"):
        bt.backtest(nightly, period=(0.9, 0.3))
    result = CliRunner().invoke(cli, ["backtest", "--data-dir", str(nightly.data_dir), "--period", "half"])
    assert result.exit_code == 2 and "expected two shares FROM,TO such as 0.3,0.9" in result.output
