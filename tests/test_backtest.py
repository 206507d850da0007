"""backtest: nightly replays scored on what users rated after each night."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from recjobs.cli import cli
from recjobs.errors import ConfigError
from recjobs.evaluation import peers, temporal
from recjobs.jobs import backtest as bt
from recjobs.jobs.synth import synth
from recjobs.method import model
from recjobs.settings import Settings
from recjobs.storage.movielens import read_catalog
from support import nightly_dir, write_dataset, write_synthetic

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
    users, per_user, _, _ = bt.one_night(
        ratings, night, Settings(**SMALL), window_days=30, recent_days=30, ease_lambda=10.0
    )
    assert users.tolist() == [1]
    # 4 unrated movies are known at T and user 1 has one target: every list of 10 finds it
    found = {name: values[0, 0] for name, values in per_user.items() if name != "no_content"}
    assert found == dict.fromkeys(set(bt.MODELS) - {"no_content"}, 1.0)
    assert np.isnan(per_user["no_content"]).all()  # no catalogue given: no content step to leave out


def test_nothing_after_the_window_changes_a_night(nightly):
    ratings = bt.rating_arrays(read_catalog(nightly.data_dir))
    night = int(bt.nightly_cutoffs(ratings["rated_at"], 1, window_days=20)[0])
    chooses = nightly.replace(choice_min_user_windows=5, choice_window_days=20)
    users, per_user, choice, _ = bt.one_night(ratings, night, chooses, 20, 30, ease_lambda=10.0)
    assert choice.protocol == "temporal"  # the night chose (or kept) its blend on its own past
    later = ratings["rated_at"] >= night + 20 * bt.DAY
    changed = {k: v.copy() for k, v in ratings.items()}
    changed["rating"][later] = 6.0 - changed["rating"][later]  # likes become dislikes and back
    users2, per_user2, choice2, _ = bt.one_night(changed, night, chooses, 20, 30, ease_lambda=10.0)
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
    with pytest.raises(ConfigError, match=r"refresh -1 days; .* a refresh of 0 \(off\) or more days"):
        bt.backtest(nightly, refresh_days=-1)
    result = CliRunner().invoke(cli, ["backtest", "--data-dir", str(nightly.data_dir), "--period", "half"])
    assert result.exit_code == 2 and "expected two shares FROM,TO such as 0.3,0.9" in result.output


START = 1_500_000_000  # nightly_dir's first day
REFRESH_NIGHT = bt.night_before(START + 150 * bt.DAY)


def switching_dir(folder):
    """nightly_dir's two taste groups (movies 1-15 and 16-30), and users who come back the day
    after REFRESH_NIGHT. User 101 liked movies 1 and 2 before it and switches: that day they
    rate 16, 17, 18, 31 (a movie first rated that day), then like 20, 21, 22 and dislike 23.
    102 rates once that day, 103 twice with a dislike last, 104 the second time a day and a
    half later, and 105 is new: none of them qualifies."""
    base = nightly_dir(folder / "base")
    rows = (base / "ratings.csv").read_text().splitlines()[1:]
    hour = 3_600
    rows += [f"101,{m},5.0,{START + (90 + m) * bt.DAY}" for m in (1, 2)]
    day = [16, 17, 18, 31, 20, 21, 22]
    rows += [f"101,{m},5.0,{REFRESH_NIGHT + (i + 1) * hour}" for i, m in enumerate(day)]
    rows.append(f"101,23,1.0,{REFRESH_NIGHT + 9 * hour}")
    for user in (102, 103, 104):
        rows += [f"{user},{m},5.0,{START + (90 + m) * bt.DAY}" for m in (3, 4, 5)]
    rows += [f"102,6,5.0,{REFRESH_NIGHT + hour}", f"103,6,5.0,{REFRESH_NIGHT + hour}"]
    rows += [f"103,7,1.0,{REFRESH_NIGHT + 2 * hour}", f"104,6,5.0,{REFRESH_NIGHT + hour}"]
    rows += [f"104,7,5.0,{REFRESH_NIGHT + 36 * hour}"]
    rows += [f"105,{m},5.0,{REFRESH_NIGHT + m * hour}" for m in (1, 2, 3, 4)]
    return write_synthetic(folder / "switching", rows, 31)


def test_the_refresh_folds_in_the_earlier_ratings_and_scores_the_later_ones(tmp_path):
    settings = Settings(**SMALL)
    ratings = bt.rating_arrays(read_catalog(switching_dir(tmp_path)))
    win = temporal.window(ratings, REFRESH_NIGHT, REFRESH_NIGHT + 20 * bt.DAY, settings)
    data = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, settings)
    fitted = model.fit_method(data, settings)

    user_ids, earlier, targets = bt.day_split(ratings, win, 1.0, settings)
    assert 101 in user_ids and not {102, 103, 104, 105} & set(user_ids.tolist())
    i = int(np.flatnonzero(user_ids == 101)[0])
    mine = earlier & (ratings["user_id"] == 101)
    # 8 ratings that day: the first 4 are earlier (31 counts for the split, but is unknown)
    assert sorted(ratings["movie_id"][mine].tolist()) == [16, 17, 18]
    assert win.movie_ids[targets[i].indices].tolist() == [20, 21, 22]

    refreshed, history = bt.refreshed_model(ratings, win, data, fitted, settings, user_ids, earlier)
    row = model.index(np.array([101]), win.user_ids)
    combined = model.interactions(ratings, win.keep | mine, win.user_ids, win.movie_ids, settings)
    expected = model.fold_in(fitted, row, combined.confidence, settings)
    np.testing.assert_allclose(refreshed.als.user_factors[row], expected.als.user_factors[row], rtol=1e-5)
    before_only = model.fold_in(fitted, row, data.confidence, settings)
    assert not np.allclose(refreshed.als.user_factors[row], before_only.als.user_factors[row], rtol=1e-3)
    others = ~np.isin(win.user_ids, user_ids)  # only the qualifying users are folded in
    np.testing.assert_array_equal(refreshed.als.user_factors[others], fitted.als.user_factors[others])
    np.testing.assert_array_equal(history.trending, data.trending)  # the night's trending part

    lists = bt.refresh_lists(fitted, data, refreshed, history, model.index(user_ids, win.user_ids), settings)
    tops = {name: set(win.movie_ids[top[i]].tolist()) for name, top in lists.items()}
    assert max(tops["night"]) <= 15  # the night knew only their taste for movies 1-15
    assert not {1, 2} & (tops["night"] | tops["night_filtered"] | tops["refreshed"])
    assert not {16, 17, 18} & (tops["night_filtered"] | tops["refreshed"])
    recall = {name: temporal.list_metrics(top, targets)[i, 0] for name, top in lists.items()}
    # they switched taste: only the refreshed list finds the movies they went on to like
    assert recall == {"night": 0.0, "night_filtered": 0.0, "refreshed": 1.0}


def test_the_refresh_replay_is_reported(tmp_path):
    synth(300, 300, 15_000, 3, tmp_path / "data", days=365)
    settings = Settings(data_dir=tmp_path / "data", artifacts=tmp_path / "artifacts", **SMALL)
    result = bt.backtest(settings, tmp_path / "bt", nights=4, window_days=14, peers_too=False)
    assert result.refresh_user_days > 5 and result.refresh_users <= result.refresh_user_days
    recall = result.refresh_recall_at_10
    gain, low, high = result.refresh_gain["recall_at_10"]["night"]
    assert gain == pytest.approx(recall["refreshed"] - recall["night"]) and low <= gain <= high
    report = (tmp_path / "bt" / "report.md").read_text()
    assert "## Refresh between nights" in report and "| refreshed: the earlier ratings folded in |" in report
    stored = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert stored["result"]["refresh_recall_at_10"] == recall
    rows = {r["metric"]: r["value"] for r in stored["rows"] if r["segment"] == bt.REFRESH_SEGMENT}
    assert rows["n_user_days"] == result.refresh_user_days
    assert rows["refreshed_ndcg_at_10"] == result.refresh_ndcg_at_10["refreshed"]

    off = bt.backtest(settings, tmp_path / "off", nights=1, window_days=14, peers_too=False, refresh_days=0)
    assert off.refresh_user_days == 0 and off.refresh_recall_at_10 is None and off.refresh_gain is None
    assert "Not replayed (--refresh-days 0)." in (tmp_path / "off" / "report.md").read_text()


def test_no_user_day_qualifies_without_a_crash(nightly, tmp_path):
    """nightly_dir's users rate every few days: none rates twice the day after a night."""
    result = bt.backtest(nightly, tmp_path / "bt", nights=2, window_days=20, peers_too=False)
    assert result.refresh_user_days == 0 and result.refresh_recall_at_10 is None
    assert "No user-day qualified" in (tmp_path / "bt" / "report.md").read_text()
    stored = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert "NaN" not in json.dumps(stored)
    assert [r for r in stored["rows"] if r["segment"] == bt.REFRESH_SEGMENT] == [
        {"metric": "n_user_days", "segment": bt.REFRESH_SEGMENT, "value": 0.0}
    ]


def test_a_night_that_chose_other_trend_days_is_scored_with_them(nightly):
    """The night's matrices count the configured trend_days; a blend that chose others is scored
    with its own trending part, as the published run would (its params.json)."""
    ratings = bt.rating_arrays(read_catalog(nightly.data_dir))
    night = int(bt.nightly_cutoffs(ratings["rated_at"], 1, window_days=20)[0])
    from recjobs.evaluation import temporal

    win = temporal.window(ratings, night, night + 20 * bt.DAY, nightly)
    data = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, nightly)
    week = nightly.replace(trend_days=7.0)
    own = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, week)
    scored = bt.with_trend_days(data, ratings, win, week)
    np.testing.assert_array_equal(scored.trending, own.trending)
    assert not np.array_equal(scored.trending, data.trending)  # the set's last 30 and 7 days differ
    assert bt.with_trend_days(data, ratings, win, nightly) is data


@pytest.fixture(scope="module")
def new_movies_dir(tmp_path_factory):
    """A synthetic year with far more movies than ratings: the tail movies are first rated late,
    so every night has new movies, of the taste groups (and genres) of the users who like them."""
    folder = tmp_path_factory.mktemp("new_movies") / "data"
    synth(600, 3000, 30_000, 3, folder, days=365)
    return folder


def test_the_new_movies_replay_never_reads_their_ratings_before_the_night(new_movies_dir):
    settings = Settings(factors=16, iterations=5, item_neighbours=20)
    catalog = read_catalog(new_movies_dir)
    ratings = bt.rating_arrays(catalog)
    night = int(bt.nightly_cutoffs(ratings["rated_at"], 1, window_days=14)[0])
    new_ids = bt.new_movie_ids(ratings, night, 60)
    first = {m: ratings["rated_at"][ratings["movie_id"] == m].min() for m in new_ids[:20]}
    assert len(new_ids) > 50 and all(night - 60 * bt.DAY <= t < night for t in first.values())
    users, n_new, per_user = bt.new_movies_replay(ratings, catalog, night, settings, 14)
    assert n_new == len(new_ids) and len(users) > 5 and set(per_user) == set(bt.NEW_MOVIES_LISTS)

    held_out = np.isin(ratings["movie_id"], new_ids) & (ratings["rated_at"] < night)
    changed = {k: v.copy() for k, v in ratings.items()}
    changed["rating"][held_out] = 6.0 - changed["rating"][held_out]  # likes become dislikes and back
    changed["user_id"][held_out] = np.random.default_rng(0).permutation(changed["user_id"][held_out])
    users2, n_new2, per_user2 = bt.new_movies_replay(changed, catalog, night, settings, 14)
    assert users.tolist() == users2.tolist() and n_new == n_new2
    for name in bt.NEW_MOVIES_LISTS:
        np.testing.assert_array_equal(per_user[name], per_user2[name])


def test_content_beats_genre_popularity_on_new_movies(new_movies_dir):
    settings = Settings(factors=16, iterations=5, item_neighbours=20)
    catalog = read_catalog(new_movies_dir)
    ratings = bt.rating_arrays(catalog)
    users, candidates, pooled = [], [], {name: [] for name in bt.NEW_MOVIES_LISTS}
    for night in bt.nightly_cutoffs(ratings["rated_at"], 4, window_days=14):
        night_users, n_new, per_user = bt.new_movies_replay(ratings, catalog, int(night), settings, 14)
        users.append(night_users)
        candidates.append((bt._date(night), n_new))
        for name in bt.NEW_MOVIES_LISTS:
            pooled[name].append(per_user[name])
    users = np.concatenate(users)
    rows = bt.new_movies_rows({name: np.vstack(v) for name, v in pooled.items()}, users)
    figures = bt.new_movies_figures({(m, s): v for m, s, v in rows}, len(users))
    recall = figures["new_movies_recall_at_50"]
    assert len(users) > 40 and min(n for _, n in candidates) > 50  # Recall@50 is not 1 by construction
    for name in bt.CONTENT_LISTS:  # genres, year and tags carry the taste groups; genre popularity cannot
        assert recall[name] > recall["genre_popularity"] + 0.1
        assert figures["new_movies_recall_at_10"][name] > figures["new_movies_recall_at_10"]["genre_popularity"]
        ratio, low, high = figures["new_movies_ratio"][name]
        assert ratio == pytest.approx(recall[name] / recall["genre_popularity"]) and low <= ratio <= high
    result = SimpleNamespace(
        new_movies_days=60.0,
        new_movies_user_nights=len(users),
        new_movies_users=len(np.unique(users)),
        new_movies_candidates=tuple(candidates),
        **figures,
    )
    section = "\n".join(bt.new_movies_section(result))
    assert "## New movies" in section and "| genre popularity (the baseline) |" in section
    assert f"{len(users)} user-nights" in section and "x [" in section


def test_the_new_movies_replay_is_wired_into_the_backtest(nightly, tmp_path):
    """nightly_dir's movies are all rated in its first weeks: no night has new movies."""
    result = bt.backtest(nightly, tmp_path / "bt", nights=1, window_days=20, peers_too=False, refresh_days=0)
    assert result.new_movies_days == 60 and result.new_movies_user_nights == 0
    assert result.new_movies_recall_at_50 is None and result.new_movies_ratio is None
    assert (
        "No user-night qualified: no known user liked a movie first rated"
        in (tmp_path / "bt" / "report.md").read_text()
    )
    stored = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert [r for r in stored["rows"] if r["segment"] == bt.NEW_MOVIES_SEGMENT] == [
        {"metric": "n_user_nights", "segment": bt.NEW_MOVIES_SEGMENT, "value": 0.0}
    ]
    off = SimpleNamespace(new_movies_days=0.0)
    assert bt.new_movies_section(off)[-1] == "Not replayed (new_movies_days 0)."
    with pytest.raises(ConfigError, match=r"new movies -1 days, .* a new-movies span of 0 \(off\) or more days"):
        bt.backtest(nightly, new_movies_days=-1)
