"""Reading and checking a MovieLens-layout folder: movies.csv, ratings.csv, links.csv,
tags.csv, incoming/*.csv (new ratings) and incoming/hidden*.csv (movies users hid). Raises
DataError on the first problem, naming the file, the line and what was expected; returns the
validated, merged data.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .artifacts import Catalog
from .db import MAX_ID

log = logging.getLogger(__name__)

RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIE_COLUMNS = ("movieId", "title", "genres")
LINK_COLUMNS = ("movieId", "imdbId", "tmdbId")
TAG_COLUMNS = ("userId", "movieId", "tag", "timestamp")
YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


def read_catalog(data_dir: Path, positive_threshold: float = 4.0) -> Catalog:
    """Read and check every input file; raise DataError on the first problem."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"{data_dir}: data folder not found; expected a folder with movies.csv and ratings.csv "
            "(run `recjobs fetch-data`)"
        )
    hasher = hashlib.sha256()

    movies = _read(data_dir, "movies.csv", MOVIE_COLUMNS, hasher)
    movies = pd.DataFrame(
        {
            "movie_id": _ids(movies, "movieId", data_dir / "movies.csv"),
            "title": _text(movies, "title"),
            "genres": _text(movies, "genres"),
        }
    )
    _no_duplicates(movies, ["movie_id"], data_dir / "movies.csv", "movie {movie_id} is listed twice")
    movies["year"] = pd.to_numeric(movies["title"].str.extract(YEAR_IN_TITLE, expand=False)).astype("Int64")

    links = _read(
        data_dir,
        "links.csv",
        LINK_COLUMNS,
        hasher,
        dtype={"imdbId": str},
        allow_empty=True,
        optional="IMDb and TMDb ids",
    )
    links = pd.DataFrame(
        {
            "movie_id": _ids(links, "movieId", data_dir / "links.csv"),
            "imdb_id": links["imdbId"].where(links["imdbId"].notna(), None),
            "tmdb_id": _ids(links, "tmdbId", data_dir / "links.csv", optional=True),
        }
    ).drop_duplicates("movie_id")
    movies = movies.merge(links, on="movie_id", how="left")

    tags = _read(data_dir, "tags.csv", TAG_COLUMNS, hasher, dtype={"tag": str}, allow_empty=True, optional="tags")
    tags = pd.DataFrame(
        {
            "user_id": _ids(tags, "userId", data_dir / "tags.csv"),
            "movie_id": _ids(tags, "movieId", data_dir / "tags.csv"),
            "tag": _text(tags, "tag"),
            "tagged_at": _timestamps(tags, data_dir / "tags.csv"),
        }
    )
    tags = tags[tags["movie_id"].isin(movies["movie_id"])]

    frames = [_ratings(data_dir, "ratings.csv", hasher)]
    incoming, hidden_files = incoming_files(data_dir)
    for path in incoming:
        frames.append(read_ratings_file(data_dir, path, hasher))
    hidden = read_hidden_files(data_dir, hidden_files, hasher)
    ratings = merge_rating_files(frames)

    known = ratings["movie_id"].isin(movies["movie_id"])
    n_dropped = int((~known).sum())
    if n_dropped:
        log.warning(
            "dropped %d ratings of %d movies not in movies.csv", n_dropped, ratings.loc[~known, "movie_id"].nunique()
        )
    ratings = ratings[known]
    ratings = ratings.sort_values(["user_id", "rated_at", "movie_id"], kind="stable").reset_index(drop=True)
    if ratings.empty:
        raise DataError("ratings: no rating is of a movie in movies.csv; expected ratings of listed movies")

    positives = ratings.loc[ratings["rating"] >= positive_threshold, "user_id"].value_counts()
    if not (positives >= 2).any():
        raise DataError(
            f"ratings: no user has 2 ratings >= {positive_threshold}; "
            "expected at least one user to evaluate the model on"
        )
    return Catalog(
        movies=movies,
        ratings=ratings,
        tags=tags.reset_index(drop=True),
        hidden=hidden,
        n_incoming_files=len(incoming),
        n_dropped_ratings=n_dropped,
        data_sha256=hasher.hexdigest(),
    )


HIDDEN_COLUMNS = ("userId", "movieId", "timestamp")
HIDDEN_FILES = "hidden*.csv"


def merge_rating_files(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The ratings of checked rating files, given in file order: a later rating (by time, then by
    file) of the same user and movie replaces the earlier."""
    for order, frame in enumerate(frames):
        frame["file_order"] = order
    ratings = pd.concat(frames, ignore_index=True)
    if len(frames) > 1:  # one file has no duplicates (_ratings checked): no sort needed
        ratings = ratings.sort_values(["user_id", "movie_id", "rated_at", "file_order"], kind="stable").drop_duplicates(
            ["user_id", "movie_id"], keep="last"
        )
    return ratings.drop(columns="file_order")


def incoming_files(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """(ratings files, hidden-movie files) of data_dir/incoming, each sorted by name:
    incoming/hidden*.csv list movies users hid ("not interested"), every other .csv new ratings."""
    folder = Path(data_dir) / "incoming"
    if not folder.is_dir():
        return [], []
    hidden = sorted(folder.glob(HIDDEN_FILES))
    return [p for p in sorted(folder.glob("*.csv")) if p not in hidden], hidden


def read_ratings_file(data_dir: Path, path: Path, hasher=None) -> pd.DataFrame:
    """One ratings file of incoming/, checked like ratings.csv."""
    return _ratings(data_dir, str(Path(path).relative_to(data_dir)), hasher or hashlib.sha256())


def read_hidden_files(data_dir: Path, paths, hasher=None) -> pd.DataFrame:
    """user_id, movie_id, hidden_at of incoming/hidden*.csv files (a pair hidden twice: the
    first time kept); DataError naming the file and line of the first bad row."""
    hasher = hasher or hashlib.sha256()
    frames = [pd.DataFrame({"user_id": [], "movie_id": [], "hidden_at": []}, dtype=np.int64)]
    for path in paths:
        name = str(Path(path).relative_to(data_dir))
        frame = _read(Path(data_dir), name, HIDDEN_COLUMNS, hasher)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": _ids(frame, "userId", Path(path)),
                    "movie_id": _ids(frame, "movieId", Path(path)),
                    "hidden_at": _timestamps(frame, Path(path)),
                }
            )
        )
    hidden = pd.concat(frames, ignore_index=True).sort_values("hidden_at", kind="stable")
    return hidden.drop_duplicates(["user_id", "movie_id"]).reset_index(drop=True)


def _read(data_dir: Path, name: str, columns, hasher, dtype=None, allow_empty=False, optional=False) -> pd.DataFrame:
    path = data_dir / name
    expected = ",".join(columns)
    if path.is_dir():
        raise DataError(f"{name}: is a folder in {data_dir}; expected a CSV file with columns {expected}")
    if optional and not path.exists():
        log.info("%s: not in %s; going on without it (it only adds %s)", name, data_dir, optional)
        frame = pd.read_csv(io.StringIO(expected + "\n"), dtype=dtype)
        frame.attrs["file"] = name
        return frame
    if not path.is_file():
        raise DataError(f"{name}: file not found in {data_dir}; expected a CSV with columns {expected}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{name}: file is empty; expected a header row {expected} and data rows")
    hasher.update(name.encode() + b"\0" + raw)
    try:
        # only an empty field is missing: "NaN" or "NA" stay text, so errors quote them as written
        frame = pd.read_csv(
            path, encoding="utf-8-sig", dtype=dtype, skipinitialspace=False, keep_default_na=False, na_values=[""]
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: file is empty; expected a header row {expected} and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: not a readable UTF-8 CSV ({str(e).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name}: missing column {', '.join(repr(c) for c in missing)} "
            f"(found {','.join(frame.columns)}); expected {expected}"
        )
    if frame.empty and not allow_empty:
        raise DataError(f"{name}: no data rows after the header; expected at least one row")
    frame.attrs["file"] = name
    return frame


def _line(frame: pd.DataFrame, position: int) -> str:
    return f"{frame.attrs['file']} line {position + 2}"  # +1 for the header, +1 for 1-based


SHOWN_CHARS = 60  # an error quotes at most this much of a bad field


def _show(value) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= SHOWN_CHARS else f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    return "(empty)" if pd.isna(value) else str(value)


def _ids(frame: pd.DataFrame, column: str, path: Path, optional: bool = False) -> pd.Series:
    values = frame[column]
    if pd.api.types.is_integer_dtype(values):
        numbers = values
        bad = (values < 0) | (values > MAX_ID)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        missing = values.isna() | (values.astype(str).str.strip() == "")
        bad = (
            (numbers.isna() & ~(missing & optional))
            | (numbers < 0)
            | (numbers > MAX_ID)
            | ((numbers % 1).fillna(0) != 0)
        )
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{_line(frame, i)}: {column} {_show(values.iloc[i])} is not an id; "
            f"expected a whole number from 0 to {MAX_ID}"
        )
    return numbers.astype("Int64" if optional else np.int64)


MAX_TEXT = 1000  # characters of a title, genre list or tag


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    values = frame[column].fillna("").astype(str)
    too_long = values.str.len() > MAX_TEXT
    if too_long.any():
        i = int(np.flatnonzero(too_long.to_numpy())[0])
        raise DataError(
            f"{_line(frame, i)}: {column} {_show(values.iloc[i])} is too long; expected at most {MAX_TEXT} characters"
        )
    return values


LATEST_TIME_AHEAD = 86_400  # a rating may be stamped at most a day after now (clock skew)


def _timestamps(frame: pd.DataFrame, path: Path) -> pd.Series:
    import time

    values = frame["timestamp"]
    if pd.api.types.is_integer_dtype(values):
        seconds = values.astype(np.float64)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        parsed = pd.to_datetime(values.where(numbers.isna()), utc=True, errors="coerce", format="ISO8601")
        seconds = numbers.fillna((parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
    latest = time.time() + LATEST_TIME_AHEAD
    bad = seconds.isna() | (seconds < 0) | (seconds > latest)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        when = "is in the future" if seconds.iloc[i] > latest else "is not a time"
        raise DataError(
            f"{_line(frame, i)}: timestamp {_show(values.iloc[i])} {when}; "
            "expected seconds since 1970-01-01 UTC or an ISO 8601 date-time, not after today"
        )
    return seconds.astype(np.int64)


def _ratings(data_dir: Path, name: str, hasher) -> pd.DataFrame:
    frame = _read(data_dir, name, RATING_COLUMNS, hasher)
    path = data_dir / name
    user_id = _ids(frame, "userId", path)
    movie_id = _ids(frame, "movieId", path)
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    bad = rating.isna() | (rating < 0.5) | (rating > 5.0) | ((rating * 2) % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{_line(frame, i)}: rating {_show(frame['rating'].iloc[i])} is not one of 0.5, 1.0, ... 5.0; "
            "expected a multiple of 0.5 from 0.5 to 5.0"
        )
    out = pd.DataFrame(
        {"user_id": user_id, "movie_id": movie_id, "rating": rating.astype(float), "rated_at": _timestamps(frame, path)}
    )
    out.attrs["file"] = name
    _no_duplicates(out, ["user_id", "movie_id"], path, "user {user_id} rated movie {movie_id} twice")
    return out


def _no_duplicates(frame: pd.DataFrame, keys: list[str], path: Path, what: str) -> None:
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        first = {k: frame[k].iloc[rows[0]] for k in keys}
        twin = next(r for r in rows[1:] if all(frame[k].iloc[r] == first[k] for k in keys))
        name = frame.attrs.get("file", path.name)
        raise DataError(
            f"{name} lines {rows[0] + 2} and {twin + 2}: {what.format(**first)}; expected each once per file"
        )
