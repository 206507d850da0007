"""The forward metric: each nightly run scores the served run on the ratings that arrived since."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from recjobs import pipeline
from recjobs.evaluation.metrics import recall_ndcg_of_items
from recjobs.settings import Settings
from support import nightly_dir

SMALL = {"factors": 4, "iterations": 5, "item_neighbours": 20, "k": 10}


def split_by_time(folder, days: float):
    """Move the ratings after the first `days` of the data to incoming/late.csv; those rows."""
    lines = (folder / "ratings.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    cut = min(int(r[3]) for r in rows) + days * 86_400
    early = [line for line, r in zip(lines[1:], rows, strict=True) if int(r[3]) < cut]
    late = [line for line, r in zip(lines[1:], rows, strict=True) if int(r[3]) >= cut]
    (folder / "ratings.csv").write_text("\n".join([lines[0], *early]) + "\n")
    (folder / "incoming").mkdir()
    return lines[0], late


def test_the_next_run_scores_the_served_run_on_what_arrived_since(tmp_path):
    data = nightly_dir(tmp_path / "data")
    header, late = split_by_time(data, 150)
    settings = Settings(data_dir=data, db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts", **SMALL)
    assert pipeline.run(settings, "night1").precompute.status == "published"
    con = sqlite3.connect(settings.db)
    assert con.execute("SELECT count(*) FROM run_metrics WHERE segment LIKE 'forward:%'").fetchone() == (0,)

    (data / "incoming" / "late.csv").write_text("\n".join([header, *late]) + "\n")
    pipeline.run(settings, "night2")
    stored = dict(
        con.execute("SELECT metric, value FROM run_metrics WHERE run_id = 'night2' AND segment = 'forward:night1'")
    )
    # the same figure from the served lists and the incoming file, computed here
    lists = {}
    for user, movie in con.execute(
        "SELECT user_id, movie_id FROM recommendations WHERE run_id = 'night1' AND rank <= 10 ORDER BY user_id, rank"
    ):
        lists.setdefault(user, []).append(movie)
    known = {m for (m,) in con.execute("SELECT DISTINCT movie_id FROM recommendations WHERE run_id = 'night1'")}
    known |= {int(line.split(",")[1]) for line in (data / "ratings.csv").read_text().splitlines()[1:]}
    targets = {}
    for line in late:
        user, movie, rating, _ = line.split(",")
        if float(rating) >= 4.0 and int(user) in lists and int(movie) in known:
            targets.setdefault(int(user), set()).add(int(movie))
    expected = np.mean([recall_ndcg_of_items(lists[u], t)[0] for u, t in targets.items()])
    assert stored["forward_n_users"] == len(targets) > 20
    assert stored["forward_recall_at_10"] == pytest.approx(expected)
    # taste groups: the served run beats popularity on the days after it
    assert stored["forward_recall_at_10"] > stored["forward_popularity_recall_at_10"]
    assert 0 <= stored["forward_recent_popularity_recall_at_10"] <= 1
    from recjobs.storage.db import sql

    rows = con.execute(sql("dashboard_forward_recall")).fetchall()
    assert {(r[0], r[2], r[4]) for r in rows} >= {("night2", "served run", "night1")}
