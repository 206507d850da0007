"""datasette's configuration, built from sql/datasette.yaml: the profiles (datasette settings),
the metadata, and each canned query's SQL from sql/<query name>.sql. Read by `serve` and by
the plugin, so neither imports the other."""

from __future__ import annotations

import copy
import functools
import html
import urllib.parse
from dataclasses import dataclass

import yaml

from ..errors import ConfigError
from ..storage.db import SQL_DIR

CONFIG_PATH = SQL_DIR / "datasette.yaml"
DATABASE = "recs"  # the URL path of the database, whatever its file is called
PROFILES = ("default", "reporting")


@dataclass(frozen=True)
class DatasetteConfig:
    profile: str
    metadata: dict
    settings: dict


@functools.cache
def _raw_config() -> dict:
    return yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))


def canned_query_names() -> list[str]:
    return list(_raw_config()["metadata"]["databases"][DATABASE]["queries"])


def _sql_file(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise ConfigError(f"{CONFIG_PATH}: names {name!r} but {path} does not exist")
    return path.read_text(encoding="utf-8")


def example_path(name: str, example: dict) -> str:
    return f"/{DATABASE}/{name}" + (f"?{urllib.parse.urlencode(example)}" if example else "")


def front_page_list(queries: dict) -> str:
    """HTML list of the canned queries, each with a working example link and its JSON."""
    items = []
    for name, query in queries.items():
        path = example_path(name, query.get("example") or {})
        json_path = path.replace(f"/{name}", f"/{name}.json", 1) + ("&" if "?" in path else "?") + "_shape=array"
        items.append(
            f'<li><a href="{html.escape(path)}">{html.escape(query["title"])}</a> '
            f'(<a href="{html.escape(json_path)}">JSON</a>): {html.escape(query["description"])}</li>'
        )
    more = (
        '<li><a href="/recs/-/cold_start.json?liked=296,318,593&amp;k=10">Recommendations for a new user, '
        "computed from the published model</a> (JSON): the cold-start job's answer for the liked movie ids; "
        "prefer it to the similar-movies query above.</li>"
        '<li><a href="/-/health">Health</a>: the published run, its age in hours and the users it serves; '
        "503 when none.</li>"
    )
    return f"<ul>{''.join(items)}{more}</ul>"


def datasette_config(profile: str = "default") -> DatasetteConfig:
    """The metadata and settings datasette gets for a profile, with the SQL filled in."""
    raw = _raw_config()
    if profile not in raw["profiles"]:
        raise ConfigError(f"unknown serving profile {profile!r}; expected one of {', '.join(raw['profiles'])}")
    chosen = raw["profiles"][profile]
    metadata = copy.deepcopy(raw["metadata"])
    queries = metadata["databases"][DATABASE]["queries"]
    metadata["description_html"] += front_page_list(queries)
    for name, query in queries.items():
        query.pop("example", None)  # recjobs' own key: the front page's link
        query["sql"] = _sql_file(name)
    plugins = copy.deepcopy(chosen.get("plugins", {}))
    for dashboard in plugins.get("datasette-dashboards", {}).values():
        for chart in dashboard.get("charts", {}).values():
            if "query_file" in chart:
                chart["query"] = _sql_file(chart.pop("query_file"))
    plugins["recjobs"] = {"profile": profile}  # read by recjobs.serving.datasette_plugin
    metadata["plugins"] = plugins
    return DatasetteConfig(profile, metadata, dict(chosen["settings"]))
