"""Lists that react between nights: `recjobs refresh`, hidden movies and the business rules."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recjobs import pipeline
from recjobs.cli import cli
from recjobs.errors import ConfigError
from recjobs.jobs import cold_start as cs
from recjobs.jobs import refresh as rf
from recjobs.method import model, rules
from recjobs.settings import Settings
from recjobs.storage import artifacts, db
from support import REPO, copy_db, running_server

VIOLATIONS = (REPO / "sql" / "rule_violations.sql").read_text()


@pytest.fixture
def served(published_settings, tmp_path) -> Settings:
    """A private copy of the published ml-latest-small database with its own (empty) incoming/."""
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    return published_settings.replace(
        db=copy_db(published_settings.db, tmp_path / "recs.db"), data_dir=tmp_path / "data"
    )


def broken_rules(settings: Settings) -> dict[str, int]:
    """The rule_violations check's rows that count any: {rule: rows breaking it}."""
    return {rule: n for rule, n, _, _ in rows(settings, VIOLATIONS) if n}


def rows(settings: Settings, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(settings.db) as con:
        return con.execute(sql, args).fetchall()


def served_list(settings: Settings, user_id: int) -> list[tuple]:
    return rows(settings, "SELECT movie_id, score, refreshed_at FROM current_recommendations WHERE user_id = ? "
                "ORDER BY rank", user_id)  # fmt: skip


def write_incoming(settings: Settings, name: str, lines: list[str], header="userId,movieId,rating,timestamp") -> Path:
    path = Path(settings.data_dir) / "incoming" / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def top_movies(settings: Settings, user_id: int, n: int) -> list[int]:
    return [m for m, _, _ in served_list(settings, user_id)[:n]]


def test_a_refresh_remakes_only_the_lists_of_users_with_new_ratings(served):
    now = int(time.time())
    before = {u: served_list(served, u) for u in (1, 2, 3)}
    liked = top_movies(served, 1, 2)  # user 1 rates the top two movies of their list
    write_incoming(served, "ratings-0001.csv", [f"1,{m},5.0,{now}" for m in liked] + [f"987654,296,5.0,{now}"])

    result = rf.refresh(served)
    assert (result.status, result.n_ratings, result.n_users, result.n_new_users) == ("refreshed", 3, 1, 1)
    after = served_list(served, 1)
    assert len(after) == served.k and not set(liked) & {m for m, _, _ in after}  # rated: gone
    assert {r for _, _, r in after} == {rows(served, "SELECT refreshed_at FROM refreshes")[0][0]}
    assert [m for m, _, _ in after] != [m for m, _, _ in before[1]]
    assert served_list(served, 2) == before[2] and served_list(served, 3) == before[3]  # untouched, still nightly
    new_user = served_list(served, 987654)
    assert len(new_user) == served.k and 296 not in {m for m, _, _ in new_user}  # the cold-start answer, stored
    assert rows(served, "SELECT count(*) FROM refresh_ratings") == [(3,)]

    shown = CliRunner().invoke(cli, ["status", "--db", str(served.db)])
    assert "refreshed 1 times since the publish" in shown.output and "2 users' lists remade" in shown.output
    again = rf.refresh(served)  # nothing new: no write at all
    assert (again.status, again.n_files) == ("unchanged", 0)
    assert rows(served, "SELECT count(*) FROM refreshes") == [(1,)]

    # a later file: the history keeps the first file's ratings (rated movies stay out)
    write_incoming(served, "ratings-0002.csv", [f"1,{top_movies(served, 1, 1)[0]},4.0,{now + 60}"])
    third = rf.refresh(served)
    assert (third.status, third.n_ratings, third.n_users, third.n_files) == ("refreshed", 1, 1, 1)
    assert not (set(liked) | {m for m, _, _ in after[:1]}) & set(top_movies(served, 1, served.k))
    assert broken_rules(served) == {}


def test_a_refreshed_list_is_what_nightly_scoring_gives_the_same_history(served):
    """The nightly path (the run's ratings.npz, every user's matrices, shards.Scorer's exclusions
    and trending) with the user folded in on the same history gives the same list to 1e-6."""
    now = int(time.time())
    write_incoming(served, "r.csv", [f"5,{m},4.5,{now}" for m in top_movies(served, 5, 3)] + [f"5,1,1.0,{now + 1}"])
    assert rf.refresh(served).n_users == 1
    refreshed = served_list(served, 5)

    (run_id,) = rows(served, "SELECT run_id FROM published_run")[0]
    run_dir = artifacts.run_dir(published_settings_artifacts(served), run_id)
    run_settings = artifacts.run_model_settings(served, run_dir)
    fitted, factors = model.Fitted.read(run_dir, artifacts.FULL, run_settings)
    ratings = artifacts.read_ratings(run_dir)
    new = rf.read_new_ratings(served.data_dir, sorted((Path(served.data_dir) / "incoming").glob("*.csv")))
    mine = ratings["user_id"] == 5
    combined = {c: np.r_[ratings[c][~mine | ~np.isin(ratings["movie_id"], new["movie_id"])], new[c].to_numpy()]
                for c in ratings}  # fmt: skip
    everyone = np.ones(len(combined["rating"]), bool)
    data = model.interactions(combined, everyone, factors.user_ids, factors.movie_ids, run_settings)
    nightly_data = model.interactions(ratings, np.ones(len(ratings["rating"]), bool), factors.user_ids,
                                      factors.movie_ids, run_settings)  # fmt: skip
    import dataclasses

    data = dataclasses.replace(data, trending=nightly_data.trending)  # the run's trending, as its lists
    row = np.array([int(np.searchsorted(factors.user_ids, 5))])
    folded = model.fold_in(fitted, row, data.confidence, run_settings)
    items, scores = folded.recommend(row, data, served.k, run_settings)
    assert [int(factors.movie_ids[i]) for i in items[0]] == [m for m, _, _ in refreshed]
    np.testing.assert_allclose(scores[0], [s for _, s, _ in refreshed], atol=1e-6, rtol=0)


def published_settings_artifacts(settings: Settings) -> Path:
    (recorded,) = rows(settings, "SELECT artifacts_dir FROM model_runs JOIN published_run USING (run_id)")[0]
    return Path(recorded).parent


def test_hidden_movies_leave_lists_and_cold_start_answers_for_good(served, tmp_path):
    now = int(time.time())
    first, second = top_movies(served, 7, 2)
    write_incoming(served, "hidden.csv", [f"7,{first},{now}", f"7,{second},{now}"], header="userId,movieId,timestamp")
    result = rf.refresh(served)
    assert (result.n_hidden, result.n_users, result.n_ratings) == (2, 1, 0)
    assert not {first, second} & set(top_movies(served, 7, served.k))
    assert rows(served, "SELECT user_id, movie_id FROM hidden_movies ORDER BY movie_id") == sorted(
        [(7, first), (7, second)], key=lambda r: r[1]
    )
    # the cold-start route leaves them out when the same user asks, and only then
    answer = cs.cold_start(served, [first, second, 296, 318], k=50, user_id=7)
    asked = cs.cold_start(served, [296, 318], k=50, user_id=7)
    assert not {first, second} & {r.movie_id for r in asked.recommendations}
    assert not {first, second} & {r.movie_id for r in answer.recommendations}
    with pytest.raises(ConfigError, match="user_id: 'x7' is not a user id"):
        cs.cold_start(served, [296], user_id="x7")
    assert broken_rules(served) == {}


def test_the_night_leaves_out_hidden_movies_and_applies_the_rules(tmp_path):
    from support import checkerboard_settings

    settings = checkerboard_settings(tmp_path, n_similar=3)
    assert pipeline.run(settings, "first").precompute.status == "published"
    user = rows(settings, "SELECT min(user_id) FROM current_recommendations")[0][0]
    hidden_movie = top_movies(settings, user, 1)[0]
    blocked = top_movies(settings, user + 1, 1)[0]
    (Path(settings.data_dir) / "incoming").mkdir(exist_ok=True)
    write_incoming(settings, "hidden-1.csv", [f"{user},{hidden_movie},1700000000"], header="userId,movieId,timestamp")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(f"# no more of it\nexclude_movies = [{blocked}]\n")
    second = settings.replace(rules=str(rules_file))
    assert pipeline.run(second, "second").precompute.status == "published"
    assert hidden_movie not in top_movies(second, user, 5)
    assert rows(second, "SELECT count(*) FROM current_recommendations WHERE movie_id = ?", blocked) == [(0,)]
    counts = rows(second, "SELECT count(*) FROM current_recommendations GROUP BY user_id")
    assert {c for (c,) in counts} == {5}  # still k for everyone: filled from the next candidates
    in_force = json.loads(rows(second, "SELECT rules_json FROM model_runs WHERE run_id = 'second'")[0][0])
    assert in_force["exclude_movies"] == [blocked] and in_force["file"] == str(rules_file)
    assert broken_rules(second) == {}
    assert rows(second, "SELECT user_id, movie_id FROM hidden_movies") == [(user, hidden_movie)]


def test_changed_rules_reach_every_list_that_holds_a_newly_blocked_movie(served, tmp_path):
    popular = rows(served, "SELECT movie_id FROM current_recommendations GROUP BY movie_id ORDER BY count(*) DESC")[0][
        0
    ]
    holders = {u for (u,) in rows(served, "SELECT user_id FROM current_recommendations WHERE movie_id = ?", popular)}
    genre = "Horror"
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(f'exclude_movies = [{popular}]\nexclude_genres = ["{genre}"]\n')
    result = rf.refresh(served.replace(rules=str(rules_file)))
    assert result.status == "refreshed" and result.n_rule_users >= len(holders) > 0
    assert rows(served, "SELECT count(*) FROM current_recommendations WHERE movie_id = ?", popular) == [(0,)]
    assert rows(served, "SELECT count(*) FROM current_recommendations JOIN movies USING (movie_id) "
                "WHERE '|' || genres || '|' LIKE ?", f"%|{genre}|%") == [(0,)]  # fmt: skip
    assert broken_rules(served) == {}
    short = rows(served, "SELECT count(*) FROM (SELECT user_id FROM current_recommendations GROUP BY user_id "
                 "HAVING count(*) < ?)", served.k)[0][0]  # fmt: skip
    assert short == 0
    # the cold-start job applies the rules in force, read from the database
    answer = cs.cold_start(served, [296, 318, 593], k=50)
    assert popular not in {r.movie_id for r in answer.recommendations}
    assert not any(genre in (r.genres or "").split("|") for r in answer.recommendations)


def test_an_availability_window_that_closes_takes_its_movie_out(served, tmp_path):
    movie = top_movies(served, 1, 1)[0]
    closes = int(time.time()) + 3600
    rules_file = tmp_path / "rules.toml"
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(closes))
    rules_file.write_text(f"[[available]]\nmovie_id = {movie}\nuntil = {until}\n")
    settings = served.replace(rules=str(rules_file))
    rf.refresh(settings, now=closes - 60)  # the rules are in force; the movie is still available
    assert movie in top_movies(served, 1, served.k)
    later = rf.refresh(settings, now=closes + 1)
    assert later.n_rule_users > 0 and movie not in top_movies(served, 1, served.k)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exclude_movies = [1, 2]\nexclude_genre = ['Horror']\n", "line 2: unknown key 'exclude_genre'"),
        ('exclude_movies = [1]\nexclude_genres = ["Horror"\n', "line 2: not valid TOML (Unclosed array)"),
        ("a = 1 = 2\n", "line 1: not valid TOML"),
        ("# x\n\nexclude_genres = ['Horor']\n", "line 3: unknown genre 'Horor'"),
        ("exclude_movies = ['12']\n", "line 1: ['12']; expected a list of movie ids"),
        ("[[available]]\nmovie_id = 5\nfrom = 2026-02-01\nuntil = 2026-01-01\n", "line 1: until is not after from"),
        ("min_year = 2000\nmax_year = 1990\n", "line 2: max_year 1990 is before min_year 2000"),
    ],
)
def test_a_bad_rules_line_is_one_error_naming_the_line(tmp_path, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        rules.read(path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(path) in str(error.value)


def test_a_bad_rules_file_publishes_nothing(served, tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text("exclude_movies = [1]\nonly_genres = 'Children'\n")
    before = rows(served, "SELECT * FROM current_recommendations ORDER BY user_id, rank LIMIT 2000")
    for args in (["refresh"], ["run", "--run-id", "bad-rules"]):
        done = CliRunner().invoke(
            cli,
            [*args, "--db", str(served.db), "--data-dir", str(served.data_dir), "--rules", str(bad)],
        )
        assert done.exit_code == 1
        assert f"{bad} line 2:" in done.output and "expected a list of genre names" in done.output
        assert len(done.output.strip().splitlines()) == 1
    assert rows(served, "SELECT * FROM current_recommendations ORDER BY user_id, rank LIMIT 2000") == before
    assert rows(served, "SELECT count(*) FROM refreshes") == [(0,)]
    assert rows(served, "SELECT count(*) FROM model_runs WHERE run_id = 'bad-rules'") == [(0,)]


def test_a_refresh_that_meets_a_publish_writes_nothing_and_the_next_applies_the_files(served, monkeypatch, caplog):
    now = int(time.time())
    write_incoming(served, "r.csv", [f"9,{top_movies(served, 9, 1)[0]},5.0,{now}"])
    before = served_list(served, 9)
    scoring = rf.score_users

    def publish_meanwhile(*args, **kwargs):
        lists = scoring(*args, **kwargs)
        with db.transaction(served.db) as conn:  # another run is published while the refresh scores
            conn.exec_driver_sql(
                "INSERT INTO model_runs (run_id, started_at, status, params_json, artifacts_dir) "
                "SELECT 'newer', started_at, 'published', params_json, artifacts_dir FROM model_runs "
                "WHERE run_id = 'first'"
            )
            conn.exec_driver_sql(
                "INSERT INTO recommendations (run_id, user_id, rank, movie_id, score) "
                "SELECT 'newer', user_id, rank, movie_id, score FROM recommendations WHERE run_id = 'first'"
            )
            conn.exec_driver_sql("UPDATE published_run SET run_id = 'newer'")
        return lists

    monkeypatch.setattr(rf, "score_users", publish_meanwhile)
    with caplog.at_level("INFO", logger="recjobs.jobs.refresh"):
        raced = rf.refresh(served)
    assert raced.status == "skipped" and "run newer was published while refreshing run first" in raced.reason
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
        f"refresh skipped: {raced.reason}"
    ]
    assert served_list(served, 9) == before  # nothing written: not the old run's rows, not the new
    assert rows(served, "SELECT count(*) FROM refreshes") == [(0,)]
    assert rows(served, "SELECT count(*) FROM refresh_files") == [(0,)]
    monkeypatch.setattr(rf, "score_users", scoring)
    applied = rf.refresh(served)  # the same file, to the run now served
    assert (applied.status, applied.run_id, applied.n_ratings) == ("refreshed", "newer", 1)
    assert served_list(served, 9) != before


def test_a_refresh_waits_for_a_publish_holding_the_write_lock(served):
    write_incoming(served, "r.csv", [f"11,{top_movies(served, 11, 1)[0]},5.0,{int(time.time())}"])
    held = threading.Event()

    def hold_the_write_lock():
        with db.transaction(served.db):
            held.set()
            time.sleep(3)

    writer = threading.Thread(target=hold_the_write_lock)
    writer.start()
    held.wait(10)
    started = time.monotonic()
    result = rf.refresh(served)
    writer.join()
    assert result.status == "refreshed" and time.monotonic() - started >= 2  # it waited, then wrote


def test_one_refresh_at_a_time(served):
    with rf.one_refresh_at_a_time(served) as alone:
        assert alone
        other = rf.refresh(served)
    assert (other.status, other.reason) == ("skipped", "another refresh of this database is running")


def test_serving_during_refreshes_shows_whole_lists_only(served, tmp_path):
    """A datasette server answers user 3's list while refreshes replace it: every answer is one
    whole list (k rows, ranks 1..k, one refreshed_at), never an error or a mix."""
    stop = threading.Event()
    answers, problems = [], []

    def reader(server):
        while not stop.is_set():
            response = server.get("/recs/recommendations_for_user.json", params={"user_id": "3", "_shape": "array"})
            if response.status_code != 200:
                problems.append(response.status_code)
                continue
            got = response.json()
            answers.append((len(got), [r["rank"] for r in got], {r["refreshed_at"] for r in got}))

    with running_server(served.db, tmp_path / "serve.log", workers=1) as server:
        thread = threading.Thread(target=reader, args=(server,))
        thread.start()
        try:
            for i in range(6):
                top = top_movies(served, 3, 1)[0]
                write_incoming(served, f"r-{i:03d}.csv", [f"3,{top},5.0,{int(time.time()) + i}"])
                assert rf.refresh(served).n_users == 1
        finally:
            stop.set()
            thread.join()
    assert problems == []
    assert len(answers) > 10
    assert all(n == 10 and ranks == list(range(1, 11)) and len(stamps) == 1 for n, ranks, stamps in answers)
    assert len({frozenset(s) for *_, s in answers}) >= 2  # it did see lists change


def test_a_bad_incoming_file_is_one_error_and_nothing_is_written(served):
    write_incoming(served, "bad.csv", ["1,296,7.0,1700000000"])
    done = CliRunner().invoke(cli, ["refresh", "--db", str(served.db), "--data-dir", str(served.data_dir)])
    assert done.exit_code == 1 and "incoming/bad.csv line 2: rating 7.0 is not one of 0.5" in done.output
    assert rows(served, "SELECT count(*) FROM refreshes") == [(0,)]


def test_the_violations_check_finds_each_kind_of_broken_row(served, tmp_path):
    """sql/rule_violations.sql can fail: rows planted against each check are counted."""
    (run_id,) = rows(served, "SELECT run_id FROM published_run")[0]
    user = 3
    listed = top_movies(served, user, 4)
    rated = rows(served, "SELECT movie_id FROM ratings WHERE user_id = ? LIMIT 1", user)[0][0]
    horror = rows(served, "SELECT movie_id FROM movies WHERE genres LIKE '%Horror%' LIMIT 1")[0][0]
    in_force = {"exclude_movies": [listed[0]], "exclude_genres": ["Horror"], "as_of": int(time.time())}
    with sqlite3.connect(served.db) as con:
        con.execute("UPDATE model_runs SET rules_json = ? WHERE run_id = ?", (json.dumps(in_force), run_id))
        con.execute("INSERT INTO hidden_movies VALUES (?, ?, 0)", (user, listed[1]))
        con.execute(
            "UPDATE recommendations SET movie_id = ? WHERE run_id = ? AND user_id = ? AND rank = 3",
            (rated, run_id, user),
        )
        con.execute(
            "UPDATE recommendations SET movie_id = ? WHERE run_id = ? AND user_id = ? AND rank = 4",
            (horror, run_id, user),
        )
    horror_rows = rows(
        served, "SELECT count(*) FROM current_recommendations JOIN movies USING (movie_id) WHERE genres LIKE '%Horror%'"
    )[0][0]
    excluded_rows = rows(served, "SELECT count(*) FROM current_recommendations WHERE movie_id = ?", listed[0])[0][0]
    assert horror_rows > 0 and excluded_rows >= 1  # user 3's top movie, and anyone else's list it is in
    assert broken_rules(served) == {
        "excluded movie": excluded_rows,
        "hidden by the user": 1,
        "already rated": 1,
        "excluded genre": horror_rows,
    }


def test_the_json_api_serves_refreshed_lists_and_applies_hidden_movies_and_rules(served, tmp_path):
    now = int(time.time())
    hidden_movie = top_movies(served, 7, 1)[0]
    write_incoming(served, "hidden.csv", [f"7,{hidden_movie},{now}"], header="userId,movieId,timestamp")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('exclude_genres = ["Crime"]\n')
    assert rf.refresh(served.replace(rules=str(rules_file))).status == "refreshed"
    crime = {m for (m,) in rows(served, "SELECT movie_id FROM movies WHERE genres LIKE '%Crime%'")}
    with running_server(served.db, tmp_path / "serve.log", workers=1) as server:
        listed = server.rows("recommendations_for_user", user_id="7", k="50")
        assert hidden_movie not in {r["movie_id"] for r in listed} and listed[0]["refreshed_at"] is not None
        assert server.get("/-/health").json()["last_refreshed_at"] == listed[0]["refreshed_at"]
        route = "/recs/-/cold_start.json"
        asked = server.get(route, params={"liked": "1,2", "k": "50", "user_id": "7", "_shape": "array"}).json()
        anyone = server.get(route, params={"liked": "1,2", "k": "50", "_shape": "array"}).json()
        assert len(asked) == len(anyone) == 50
        assert not crime & {r["movie_id"] for r in asked + anyone}  # the rules in force, from the database
        assert hidden_movie not in {r["movie_id"] for r in asked}
        bad = server.get(route, params={"liked": "1", "user_id": "seven"})
        assert bad.status_code == 400 and "user_id: 'seven' is not a user id" in bad.json()["error"]
        canned = server.rows("cold_start", liked="296,318,593", k="50")
        assert canned and not crime & {r["movie_id"] for r in canned}
        checks = server.rows("rule_violations")
        assert [c["rule"] for c in checks][:2] == ["excluded movie", "excluded genre"]
        assert all(c["n_rows"] == 0 for c in checks)
