"""The full night's blend choice: chosen on the night's own latest windows, never past "now"."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from recjobs.evaluation import blend_choice, temporal
from recjobs.method import model
from recjobs.settings import Settings
from recjobs.storage import artifacts
from support import fad_ratings, write_synthetic

SMALL = dict(factors=8, iterations=10, item_neighbours=20, choice_min_user_windows=50)
DAY = 86_400
START = 1_500_000_000
FADS_FROM_DAY = 90


@pytest.fixture(scope="module")
def fads_later():
    """Steady tastes until day 90, weekly fads after it (support.fad_ratings)."""
    return fad_ratings(fads_from_day=FADS_FROM_DAY)


def test_the_choice_moves_with_the_data(fads_later):
    """Before the fads start, trending predicts nothing and the choice leaves it out; once what
    was liked last week predicts the next days, the choice weighs it heavily, and beats the
    configured weights on the same user-windows."""
    settings = Settings(**SMALL)
    steady = blend_choice.choose(fads_later, START + FADS_FROM_DAY * DAY, settings)
    fads = blend_choice.choose(fads_later, int(fads_later["rated_at"].max()) + 1, settings)
    assert steady.source == fads.source == "chosen" and steady.protocol == fads.protocol == "temporal"
    assert steady.weights["trend_weight"] <= 0.5 and fads.weights["trend_weight"] >= 2
    gain = fads.window_metrics["recall_at_10"] - fads.window_metrics["configured_recall_at_10"]
    assert gain > 0.1, fads.window_metrics
    assert fads.window_metrics["recall_at_10"] > fads.window_metrics["recent_popularity_recall_at_10"]
    # every grid point scored is recorded; the winner is within one standard error of the best
    best = max(r for *_, r, _ in fads.grid)
    assert best - 0.05 < fads.window_metrics["recall_at_10"] <= best


def test_no_night_sees_its_future(fads_later):
    """A night before the fads chooses the same with or without the ratings after it, although
    those ratings, seen from a later night, change the choice: peeking would show."""
    settings = Settings(**SMALL)
    now = START + FADS_FROM_DAY * DAY
    past = {name: values[fads_later["rated_at"] < now] for name, values in fads_later.items()}
    with_future = blend_choice.choose(fads_later, now, settings)
    without = blend_choice.choose(past, now, settings)
    assert with_future.weights == without.weights and with_future.grid == without.grid
    later = blend_choice.choose(fads_later, now + 30 * DAY, settings)
    assert later.weights["trend_weight"] != with_future.weights["trend_weight"]


def test_too_few_user_windows_fall_back_to_the_previous_choice_or_the_configured_weights(fads_later):
    settings = Settings(**{**SMALL, "choice_min_user_windows": 10_000})
    now = int(fads_later["rated_at"].max()) + 1
    configured = blend_choice.choose(fads_later, now, settings)
    assert configured.source == "configured" and configured.protocol == "leave-last-out"
    assert configured.weights == blend_choice.configured_weights(settings)
    assert "fewer than choice_min_user_windows 10000" in configured.reason
    previous = {"trend_weight": 4.0, "trend_days": 7.0, "blend_weight": 0.0, "sequence_weight": 1.0}
    kept = blend_choice.choose(fads_later, now, settings, previous)
    assert kept.source == "previous" and kept.weights == previous
    off = blend_choice.choose(fads_later, now, settings.replace(choose_blend=False), previous)
    assert off.source == "configured" and off.weights == blend_choice.configured_weights(settings)


def test_the_grid_scores_the_blend_that_scoring_uses(fads_later):
    """A grid point's lists are Fitted.scores' lists with those weights."""
    settings = Settings(**SMALL)
    cutoff = int(fads_later["rated_at"].max()) + 1 - 14 * DAY
    win = temporal.window(fads_later, cutoff, cutoff + 14 * DAY, settings)
    data = model.interactions(fads_later, win.keep, win.user_ids, win.movie_ids, settings)
    fitted = model.fit_method(data, settings)
    trends = temporal.trending_vectors(fads_later, win, settings, (7.0, 30.0))
    point = (2.0, 7.0, 0.5, 2.0)
    grid = temporal.blend_grid_metrics(fitted, data, win, trends, [point], settings)[0]
    weights = settings.replace(trend_weight=2.0, trend_days=7.0, blend_weight=0.25, sequence_weight=2.0)
    data_7 = model.interactions(fads_later, win.keep, win.user_ids, win.movie_ids, weights)
    direct = temporal.score_top(lambda rows: fitted.scores(rows, data_7, weights), win, data.seen)
    np.testing.assert_allclose(grid, direct)


def test_list_metrics_count_hits_against_each_users_targets():
    import scipy.sparse as sp

    targets = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 1]], np.float32))
    top = np.array([[1, 3, -1], [0, 2, 3]])
    metrics = temporal.list_metrics(top, targets)
    # user 0: one of two targets found at rank 1 (NDCG 1 / (1 + 1/log2(3))); user 1: none
    np.testing.assert_allclose(metrics[0], [0.5, 1 / (1 + 1 / np.log2(3)), 1.0])
    np.testing.assert_allclose(metrics[1], [0.0, 0.0, 0.0])


def rows_of(ratings: dict) -> list[str]:
    return [
        f"{u},{m},{r},{t}"
        for u, m, r, t in zip(
            ratings["user_id"], ratings["movie_id"], ratings["rating"], ratings["rated_at"], strict=True
        )
    ]


def test_a_full_night_chooses_usual_nights_keep_it_and_every_step_scores_with_it(tmp_path, fads_later):
    """Through `recjobs run`: the full night's choice is in params.json, model_runs and
    run_metrics, the gate used the temporal figures and the published lists are the chosen
    blend's; the next (usual) night keeps the choice and gates on leave-last-out."""
    from recjobs.method.shards import Scorer
    from recjobs.pipeline import run

    data = write_synthetic(tmp_path / "data", rows_of(fads_later), 80)
    settings = Settings(data_dir=data, db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts", k=10, **SMALL)
    first = run(settings)
    assert first.precompute.status == "published", first.precompute.reason
    assert "temporal protocol" in first.precompute.reason
    directory = artifacts.run_dir(settings.artifacts, first.run_id)
    blend = artifacts.read_params(directory)["blend"]
    assert blend["source"] == "chosen" and blend["protocol"] == "temporal" and blend["trend_weight"] >= 2
    con = sqlite3.connect(settings.db)
    protocol, params = con.execute(
        "SELECT gate_protocol, params_json FROM model_runs WHERE run_id = ?", (first.run_id,)
    ).fetchone()
    assert protocol == "temporal" and json.loads(params)["blend"]["trend_weight"] == blend["trend_weight"]
    assert json.loads(params)["trend_weight"] == settings.trend_weight  # the configured value stays
    stored = dict(con.execute("SELECT metric, value FROM run_metrics WHERE run_id = ?", (first.run_id,)))
    assert stored["chosen_trend_weight"] == blend["trend_weight"]
    assert "## The night's blend" in (directory / "report.md").read_text()

    # the published lists are the chosen blend's, not the configured one's
    scorer = Scorer(settings, first.run_id)
    assert scorer.settings.trend_weight == blend["trend_weight"]
    user = 2
    query = "SELECT movie_id FROM current_recommendations WHERE user_id = ? ORDER BY rank"
    served = [m for (m,) in con.execute(query, (user,))]
    everything = np.ones(len(scorer.ratings["user_id"]), bool)
    ids, movies = scorer.factors.user_ids, scorer.factors.movie_ids
    interactions = model.interactions(scorer.ratings, everything, ids, movies, scorer.settings)
    row = model.index(np.array([user]), ids)
    chosen_top = scorer.fitted.recommend(row, interactions, 10, scorer.settings)[0][0]
    configured_top = scorer.fitted.recommend(row, interactions, 10, settings)[0][0]
    assert served == movies[chosen_top].tolist() and served != movies[configured_top].tolist()

    from click.testing import CliRunner

    from recjobs.cli import cli

    shown = CliRunner().invoke(cli, ["status", "--db", str(settings.db)])
    assert shown.exit_code == 0 and f"blend: trend_weight {blend['trend_weight']:g}" in shown.output
    assert shown.output.rstrip().endswith("(chosen); gated on temporal")

    second = run(settings)
    assert second.precompute.status == "published" and "leave-last-out" in second.precompute.reason
    kept = artifacts.read_params(artifacts.run_dir(settings.artifacts, second.run_id))["blend"]
    assert kept["source"] == "previous" and kept["trend_weight"] == blend["trend_weight"]
    assert con.execute("SELECT gate_protocol FROM model_runs WHERE run_id = ?", (second.run_id,)).fetchone() == (
        "leave-last-out",
    )


def test_a_large_trend_weight_must_win_by_more_than_one_standard_error():
    base = np.random.default_rng(0).random((400, 3))
    swing = np.repeat([[0.1], [-0.1]], 200, axis=0)  # per user-window +-0.1: standard error 0.005
    small, large = (1.0, 30.0, 1.0, 1.0), (8.0, 30.0, 1.0, 1.0)
    hair = {small: base, large: base + swing + 0.002}  # better by 0.002 on average: within the noise
    assert blend_choice.least_trend_within_noise(hair, large) == small
    clear = {small: base, large: base + swing + 0.02}
    assert blend_choice.least_trend_within_noise(clear, large) == large
    # blends with other item-item weights are not candidates
    other = {**hair, (0.0, 30.0, 0.5, 1.0): base + swing}
    assert blend_choice.least_trend_within_noise(other, large) == small


def test_a_database_made_before_gate_protocol_gets_the_column(tmp_path):
    from recjobs.storage import db

    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.executescript(db.sql("schema"))
    con.execute("ALTER TABLE model_runs DROP COLUMN gate_protocol")
    con.execute("INSERT INTO model_runs (run_id, started_at, params_json) VALUES ('r0', 'then', '{}')")
    con.commit()
    con.close()
    with db.transaction(old) as conn:
        columns = [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(model_runs)")]
        kept = conn.exec_driver_sql("SELECT run_id, gate_protocol FROM model_runs").all()
    assert "gate_protocol" in columns and kept == [("r0", None)]
