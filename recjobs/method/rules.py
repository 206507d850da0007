"""Business rules: which movies may be recommended at all, from a TOML file (--rules /
RECJOBS_RULES). Applied wherever a list is made: precompute, refresh and cold start.

    exclude_movies = [2571, 296]              # never recommended (withdrawn, licence ended)
    exclude_genres = ["Horror"]               # never a movie with any of these genres
    only_genres = ["Children", "Animation"]   # only movies with one of these genres
    min_year = 1990                           # only movies released in or after this year
    max_year = 2030                           # ... in or before this year

    [[available]]                             # a movie recommended only inside a window (UTC):
    movie_id = 1                              # from (inclusive) until (exclusive); either may
    from = 2026-01-01                         # be left out; a date or a date-time
    until = 2026-07-01T00:00:00Z

A movie the rules block is skipped and the list goes on with the next candidates. The
checked rules are stored as JSON with the run (model_runs.rules_json), so every reader,
the cold-start route and sql/rule_violations.sql apply the same ones.

Standard library and numpy only: the cold-start job imports it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from pathlib import Path

import numpy as np

from ..errors import ConfigError

GENRES = (
    "(no genres listed)",
    *"Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Film-Noir Horror IMAX "
    "Musical Mystery Romance Sci-Fi Thriller War Western".split(),
)
KEYS = ("exclude_movies", "exclude_genres", "only_genres", "min_year", "max_year", "available")
WINDOW_KEYS = ("movie_id", "from", "until")
MAX_ID = 2**31 - 1
EXPECTED = "expected the keys " + ", ".join(KEYS) + " (see docs/refresh.md)"
NO_RULES: dict = {}


def _line_of(text: str, key: str, nth: int = 0) -> int:
    """The line (1-based) of the nth `key =` or `[[key]]` in the file; 0 when not found."""
    pattern = re.compile(rf"^[ \t]*(\[\[\s*{re.escape(key)}\s*\]\]|{re.escape(key)}\s*=)", re.MULTILINE)
    found = list(pattern.finditer(text))
    if nth >= len(found):
        return 0
    return text.count("\n", 0, found[nth].start()) + 1


def _seconds(value, where: str) -> int:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    else:
        raise ConfigError(f"{where}: {value!r} is not a date; expected a TOML date such as 2026-01-31")
    return int(moment.timestamp())


def _whole_numbers(value, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_ID for v in value
    ):
        raise ConfigError(f"{where}: {value!r}; expected a list of movie ids (whole numbers from 1 to {MAX_ID})")
    return sorted(set(value))


def _genres(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where}: {value!r}; expected a list of genre names such as ["Horror"]')
    unknown = [v for v in value if v not in GENRES]
    if unknown:
        raise ConfigError(f"{where}: unknown genre {unknown[0]!r}; expected MovieLens genres: {', '.join(GENRES)}")
    return sorted(set(value))


def parse(text: str, name: str = "rules") -> dict:
    """The checked rules of a TOML text, as plain JSON-able values; ConfigError naming the line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line = found.group(1) if found else max(1, len(text.splitlines()))  # else: at the end of the file
        where = f"{name} line {line}"
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise ConfigError(f"{where}: not valid TOML ({message}); {EXPECTED}") from None
    rules: dict = {}
    for key, value in raw.items():
        where = f"{name} line {_line_of(text, key)}"
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; {EXPECTED}")
        if key == "exclude_movies":
            rules[key] = _whole_numbers(value, where)
        elif key in ("exclude_genres", "only_genres"):
            rules[key] = _genres(value, where)
        elif key in ("min_year", "max_year"):
            if not isinstance(value, int) or isinstance(value, bool) or not 1800 <= value <= 3000:
                raise ConfigError(f"{where}: {key} = {value!r}; expected a year from 1800 to 3000")
            rules[key] = value
        else:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: available must be [[available]] tables; {EXPECTED}")
            rules[key] = [_window(entry, f"{name} line {_line_of(text, key, n)}") for n, entry in enumerate(value)]
    if "min_year" in rules and "max_year" in rules and rules["min_year"] > rules["max_year"]:
        raise ConfigError(
            f"{name} line {_line_of(text, 'max_year')}: max_year {rules['max_year']} is before min_year "
            f"{rules['min_year']}; expected min_year <= max_year"
        )
    return rules


def _window(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {entry!r}; expected a table with movie_id, from and until")
    unknown = [k for k in entry if k not in WINDOW_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in [[available]]; expected movie_id, from, until")
    if "movie_id" not in entry:
        raise ConfigError(f"{where}: [[available]] without movie_id; expected movie_id, from and until")
    movie = entry["movie_id"]
    if not isinstance(movie, int) or isinstance(movie, bool) or not 1 <= movie <= MAX_ID:
        raise ConfigError(f"{where}: movie_id {movie!r}; expected a whole number from 1 to {MAX_ID}")
    start = _seconds(entry["from"], where) if "from" in entry else None
    end = _seconds(entry["until"], where) if "until" in entry else None
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"{where}: until is not after from for movie {movie}; expected from < until")
    return {"movie_id": movie, "from": start, "until": end}


def read(path) -> dict:
    """The checked rules of a file, with its name and sha256; NO_RULES for an empty path."""
    if not path:
        return NO_RULES
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"rules: {path} not found; expected a TOML rules file (see docs/refresh.md)") from None
    except OSError as e:
        raise ConfigError(f"rules: {path} cannot be read ({e.strerror}); expected a readable TOML file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"rules: {path} is not UTF-8 text; expected a TOML rules file") from None
    rules = parse(text, str(path))
    return {**rules, "file": str(path), "sha256": hashlib.sha256(data).hexdigest()} if rules else NO_RULES


def to_json(rules: dict) -> str | None:
    return json.dumps(rules, sort_keys=True) if rules else None


def from_json(text: str | None) -> dict:
    return json.loads(text) if text else NO_RULES


def same(a: dict, b: dict) -> bool:
    """The same rules, wherever they were read from."""
    strip = ("file", "sha256")
    return {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}


def blocked(rules: dict, movie_ids, genres, years, at: float) -> np.ndarray:
    """The movie ids of `movie_ids` the rules block at time `at` (unix seconds), sorted.
    `genres`: each movie's genres as in movies.csv ('A|B'); `years`: each one's year or None."""
    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    if not rules or len(movie_ids) == 0:
        return np.empty(0, np.int64)
    out = np.isin(movie_ids, rules.get("exclude_movies", ()))
    if "exclude_genres" in rules or "only_genres" in rules:
        excluded, only = set(rules.get("exclude_genres", ())), set(rules.get("only_genres", ()))
        for i, text in enumerate(genres):
            mine = set(str(text).split("|"))
            if mine & excluded or (only and not mine & only):
                out[i] = True
    if "min_year" in rules or "max_year" in rules:
        year = np.array([np.nan if y is None else float(y) for y in years], dtype=np.float64)
        low, high = rules.get("min_year", -np.inf), rules.get("max_year", np.inf)
        out |= np.isnan(year) | (year < low) | (year > high)  # no known year: not shown under a year rule
    for window in rules.get("available", ()):
        outside = (window["from"] is not None and at < window["from"]) or (
            window["until"] is not None and at >= window["until"]
        )
        if outside:
            out |= movie_ids == window["movie_id"]
    return np.sort(movie_ids[out])


def next_change(rules: dict, at: float) -> float:
    """The next time after `at` an availability window opens or closes (inf: none)."""
    times = [t for w in rules.get("available", ()) for t in (w["from"], w["until"]) if t is not None and t > at]
    return min(times, default=float("inf"))
