"""load: validation of every bad input, and what a good load stores."""

from __future__ import annotations

import re
import sqlite3

import pytest

from recjobs.errors import DataError
from recjobs.jobs.load import load
from recjobs.storage import db
from recjobs.storage.artifacts import read_stored_catalog
from recjobs.storage.movielens import read_catalog
from recjobs.storage.publish import store_catalog
from support import tiny_ratings, write_dataset

HEADER = "userId,movieId,rating,timestamp\n"


def test_good_load_saves_the_catalog_and_starts_the_run(tiny_settings):
    result = load(tiny_settings, "r1")
    assert result.n_movies == 6
    assert result.n_ratings == tiny_ratings().count("\n") - 1
    con = sqlite3.connect(tiny_settings.db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT status FROM model_runs WHERE run_id = 'r1'").fetchone() == ("running",)
    # the catalog reaches the tables readers see only when the run is published
    assert con.execute("SELECT count(*) FROM movies").fetchone() == (0,)
    catalog = read_stored_catalog(tiny_settings.artifacts / "r1")
    with db.transaction(tiny_settings.db) as conn:
        store_catalog(conn, catalog, "r1")
    toy = con.execute("SELECT title, genres, year, imdb_id, tmdb_id FROM movies WHERE movie_id = 1").fetchone()
    assert toy == ("Toy Story (1995)", "Adventure|Animation", 1995, "0114709", 862)
    assert con.execute("SELECT tmdb_id FROM movies WHERE movie_id = 6").fetchone() == (None,)
    assert con.execute("SELECT count(*) FROM ratings").fetchone()[0] == result.n_ratings
    assert con.execute("SELECT count(*) FROM tags").fetchone()[0] == 1


def test_load_twice_keeps_one_run_record(tiny_settings):
    load(tiny_settings, "r1")
    load(tiny_settings, "r1")
    con = sqlite3.connect(tiny_settings.db)
    assert con.execute("SELECT count(*) FROM model_runs").fetchone()[0] == 1


def test_only_a_bom_is_an_empty_file(tmp_path):
    folder = write_dataset(tmp_path / "d", "")
    (folder / "ratings.csv").write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(DataError, match="ratings.csv: file is empty"):
        read_catalog(folder)


def test_bom_and_crlf_are_accepted(tmp_path):
    ratings = "\ufeff" + tiny_ratings().replace("\n", "\r\n")
    folder = write_dataset(tmp_path / "d", ratings)
    (folder / "ratings.csv").write_bytes(ratings.encode("utf-8"))
    catalog = read_catalog(folder)
    assert list(catalog.ratings.columns) == ["user_id", "movie_id", "rating", "rated_at"]
    assert len(catalog.ratings) == tiny_ratings().count("\n") - 1


def test_incoming_ratings_replace_earlier_ones(tmp_path):
    folder = write_dataset(tmp_path / "d", tiny_ratings())
    (folder / "incoming").mkdir()
    (folder / "incoming" / "2024-01.csv").write_text(HEADER + "1,1,1.0,5000\n9,2,5.0,5000\n")
    catalog = read_catalog(folder)
    r = catalog.ratings
    assert r.loc[(r.user_id == 1) & (r.movie_id == 1), "rating"].tolist() == [1.0]
    assert r.loc[r.user_id == 9, "movie_id"].tolist() == [2]
    assert catalog.n_incoming_files == 1


def test_ratings_of_unknown_movies_are_dropped_and_counted(tmp_path, caplog):
    folder = write_dataset(tmp_path / "d", tiny_ratings() + "1,999,4.0,2000\n2,998,3.0,2000\n")
    catalog = read_catalog(folder)
    assert catalog.n_dropped_ratings == 2
    assert not catalog.ratings.movie_id.isin([998, 999]).any()
    assert "dropped 2 ratings" in caplog.text


def test_year_parsed_from_title(tmp_path):
    movies = "movieId,title,genres\n1,Toy Story (1995),A\n2,Untitled,B\n3,Babylon 5 (1994) ,C\n"
    folder = write_dataset(
        tmp_path / "d", HEADER + "1,1,4.0,1\n1,2,4.0,2\n", movies=movies, links="movieId,imdbId,tmdbId\n"
    )
    years = dict(zip(*read_catalog(folder).movies[["movie_id", "year"]].T.values, strict=True))
    assert years[1] == 1995 and years[3] == 1994
    assert years[2] is None or str(years[2]) == "<NA>"


BAD_RATINGS = [
    ("1,1,4.0,1\n1,x,4.0,2\n", "ratings.csv line 3: movieId 'x' is not an id; expected a whole number from 0 to"),
    ("1,1,4.0,1\n-2,1,4.0,2\n", "ratings.csv line 3: userId -2 is not an id"),
    (
        "1,1,4.0,1\n1,100000000000000000000000,4.0,2\n",
        "ratings.csv line 3: movieId 100000000000000000000000 is not an id",
    ),
    ("1,1,4.0,1\n3000000000,1,4.0,2\n", "ratings.csv line 3: userId 3000000000 is not an id"),
    ("1,1,4.0,1\n1,2,,2\n", "ratings.csv line 3: rating (empty) is not one of 0.5"),
    ("1,1,4.0,1\n1,2,7.0,2\n", "ratings.csv line 3: rating 7.0 is not one of 0.5"),
    ("1,1,4.0,1\n1,2,3.7,2\n", "ratings.csv line 3: rating 3.7 is not one of 0.5"),
    ("1,1,4.0,1\n1,2,4.0,yesterday\n", "ratings.csv line 3: timestamp 'yesterday' is not a time"),
    ("1,1,4.0,1\n1,2,4.0,2\n1,1,3.0,3\n", "ratings.csv lines 2 and 4: user 1 rated movie 1 twice"),
    ("1,1,4.0,1\n1,2,3.0,2\n2,1,5.0,3\n", "no user has 2 ratings >= 4.0"),
]


@pytest.mark.parametrize("rows, message", BAD_RATINGS)
def test_bad_ratings_rows(tmp_path, rows, message):
    folder = write_dataset(tmp_path / "d", HEADER + rows)
    with pytest.raises(DataError, match=re.escape(message)):
        read_catalog(folder)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "ratings.csv: file is empty"),
        (HEADER, "ratings.csv: no data rows after the header"),
        ("userId,movieId,score,timestamp\n1,1,4.0,1\n", "ratings.csv: missing column 'rating'"),
    ],
)
def test_bad_ratings_files(tmp_path, content, message):
    folder = write_dataset(tmp_path / "d", content)
    with pytest.raises(DataError, match=message):
        read_catalog(folder)


@pytest.mark.parametrize("name", ["movies.csv", "ratings.csv"])
def test_missing_file(tmp_path, name):
    folder = write_dataset(tmp_path / "d", tiny_ratings())
    (folder / name).unlink()
    with pytest.raises(DataError, match=f"{name}: file not found"):
        read_catalog(folder)


def test_bad_incoming_file_names_the_file(tmp_path):
    folder = write_dataset(tmp_path / "d", tiny_ratings())
    (folder / "incoming").mkdir()
    (folder / "incoming" / "new.csv").write_text(HEADER + "1,1,9.0,5000\n")
    with pytest.raises(DataError, match=r"incoming/new\.csv line 2: rating 9\.0"):
        read_catalog(folder)


def test_duplicate_movie_id(tmp_path):
    movies = "movieId,title,genres\n1,A (1990),X\n1,B (1991),Y\n"
    folder = write_dataset(tmp_path / "d", tiny_ratings(), movies=movies)
    with pytest.raises(DataError, match="movies.csv lines 2 and 3: movie 1 is listed twice"):
        read_catalog(folder)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        read_catalog(tmp_path / "nope")


def test_iso_timestamps_are_parsed(tmp_path):
    folder = write_dataset(tmp_path / "d", HEADER + "1,1,4.0,2020-01-01T00:00:00Z\n1,2,4.0,1577836801\n")
    assert sorted(read_catalog(folder).ratings.rated_at) == [1577836800, 1577836801]


@pytest.mark.parametrize(
    "rows, message",
    [
        ("1,1,4.0,1\n1,2,4.0,-5\n", "line 3: timestamp -5 is not a time"),  # integer column, negative
        ("1,1,4.0,1\n1,2,4.0,32503680000\n", "line 3: timestamp 32503680000 is in the future"),  # year 3000
        ("1,1,4.0,1\n1,2,4.0,9223372036854775807\n", "line 3: timestamp 9223372036854775807 is in the future"),
        ("1,1,4.0,1\n1,2,4.0,2200-01-01T00:00:00Z\n", "line 3: timestamp '2200-01-01T00:00:00Z' is in the future"),
        ("1,1,4.0,1\n1,2,NaN,2\n", "line 3: rating 'NaN' is not one of"),
        ("1,1,4.0,1\n1,2,,2\n", "line 3: rating (empty) is not one of"),
    ],
)
def test_input_checks_name_the_value_as_written(tmp_path, rows, message):
    folder = write_dataset(tmp_path / "d", HEADER + rows)
    with pytest.raises(DataError, match=re.escape(message)):
        read_catalog(folder)


def test_a_huge_field_is_quoted_short_and_a_huge_title_refused(tmp_path):
    folder = write_dataset(tmp_path / "d", HEADER + "1,1,4.0,1\n" + "x" * 5_000_000 + ",2,4.0,2\n")
    with pytest.raises(DataError) as error:
        read_catalog(folder)
    assert len(str(error.value)) < 300 and "(5000000 characters)" in str(error.value)
    movies = "movieId,title,genres\n1,Toy Story (1995),Animation\n2," + "x" * 5_000_000 + ",Drama\n"
    folder = write_dataset(tmp_path / "e", tiny_ratings(), movies=movies)
    with pytest.raises(DataError, match=r"movies.csv line 3: title 'xxx.*\(5000000 characters\) is too long"):
        read_catalog(folder)


def test_a_folder_named_like_an_input_file_is_said_to_be_a_folder(tmp_path):
    folder = write_dataset(tmp_path / "d", tiny_ratings())
    (folder / "ratings.csv").unlink()
    (folder / "ratings.csv").mkdir()
    with pytest.raises(DataError, match="ratings.csv: is a folder in .*; expected a CSV file"):
        read_catalog(folder)


def test_text_that_looks_like_a_missing_value_stays_text(tmp_path):
    movies = "movieId,title,genres\n" + "".join(f"{m},M{m} (2000),Drama\n" for m in range(1, 6)) + "6,NA,None\n"
    folder = write_dataset(tmp_path / "d", tiny_ratings(), movies=movies)
    titles = read_catalog(folder).movies.set_index("movie_id")
    assert titles.loc[6, "title"] == "NA" and titles.loc[6, "genres"] == "None"


def test_links_and_tags_are_optional_and_said_once(tmp_path, caplog):
    import logging

    from recjobs import pipeline
    from recjobs.settings import Settings
    from support import checkerboard_dir

    data = checkerboard_dir(tmp_path / "data")
    (data / "links.csv").unlink()
    (data / "tags.csv").unlink()
    settings = Settings(data_dir=data, db=tmp_path / "recs.db", artifacts=tmp_path / "a", factors=4, k=5, n_similar=3)
    with caplog.at_level(logging.INFO, logger="recjobs"):
        assert pipeline.run(settings, "plain").precompute.status == "published"
    said = [r.getMessage() for r in caplog.records if "going on without it" in r.getMessage()]
    assert len(said) == 2 and said[0].startswith("links.csv: not in") and said[1].startswith("tags.csv: not in")
    conn = sqlite3.connect(settings.db)
    assert conn.execute("SELECT count(*), count(imdb_id), count(tmdb_id) FROM movies").fetchone()[1:] == (0, 0)
    assert conn.execute("SELECT count(*) FROM tags").fetchone() == (0,)
    conn.close()
