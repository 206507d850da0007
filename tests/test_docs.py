"""The README and docs/ kept honest: a short front door whose links resolve, settings, commands,
make targets and benchmarks they name exist, and nothing of the old README was lost."""

import re
from pathlib import Path

import pytest

from recjobs.cli import cli
from recjobs.settings import TABLE_BEGIN, TABLE_END, settings_table, with_settings_table
from support import REPO

README = (REPO / "README.md").read_text()
PAGES = {path.relative_to(REPO).as_posix(): path.read_text() for path in sorted((REPO / "docs").glob("*.md"))}
EVERYTHING = README + "\n".join(PAGES.values())
MAKEFILE = (REPO / "Makefile").read_text()
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))


def test_the_readme_is_a_short_front_door():
    assert len(README.splitlines()) <= 250
    first_screens = "\n".join(README.splitlines()[:60])
    assert "make run" in first_screens and "make test" in first_screens
    assert "recommendations_for_user.json?user_id=1" in first_screens  # user 1's list over HTTP
    assert "```mermaid" in README  # the night as one diagram
    for page in PAGES:
        assert f"]({page})" in README, f"the README's table of links lacks {page}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found, seen = set(), {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str) -> list[str]:
    """The targets of the Markdown links outside code blocks."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


@pytest.mark.parametrize("page", ["README.md", *PAGES])
def test_every_link_resolves(page):
    source = REPO / page
    for target in links(source.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue  # outside the repository: not reachable from here
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        assert file.exists(), f"{page}: the link {target} names a missing file"
        if anchor:
            assert file.suffix == ".md", f"{page}: {target}"
            assert anchor in anchors(file.read_text()), f"{page}: the link {target} names a missing section"


def test_the_link_checker_catches_a_broken_link_and_anchor():
    assert slug("Past one machine: Spark, score shards and an Airflow cluster") == (
        "past-one-machine-spark-score-shards-and-an-airflow-cluster"
    )
    assert slug("Over HTTP: `/recs/-/cold_start.json`") == "over-http-recs-cold_startjson"
    assert links("[a](docs/x.md#y) `[b](z)`\n```\n[c](w)\n```\n") == ["docs/x.md#y", "z"]
    assert "scale" in anchors(PAGES["docs/scaling.md"]) and "nope" not in anchors(PAGES["docs/scaling.md"])


# Where each section of the 1,277-line README went when it became a front door (issue 23).
MOVED = {
    "docs/operations.md": [
        "## What comes out",
        "## Publishing, the quality gate and rollback",
        "## The pipeline, step by step",
        "## Running with Airflow",
        "## docker-compose",
    ],
    "docs/configuration.md": ["## Data", "## Configuration"],
    "docs/development.md": ["## Layout", "## Tests", "## The reliability suite", "## Benchmarks"],
    "docs/quality.md": [
        "### The method",
        "### Quality as a nightly job delivers it: the backtest",
        "### Which protocol gates publishing",
        "### The forward metric of every nightly run",
        "### Next-item accuracy (leave-last-out)",
        "### What each lever is worth (validation items, mean over ALS seeds 42 and 43)",
        "### Choosing the other settings: `recjobs tune`",
    ],
    "docs/cold-start.md": [
        "### Over HTTP: `/recs/-/cold_start.json`",
        "### How well it works for new users",
        "### Speed",
    ],
    "docs/serving.md": [
        "## Serving with datasette",
        "### The JSON API",
        "### Reports",
        "### Profiles and hardening",
        "### The metrics dashboard",
        "### Several processes, health, caching",
        "### Speed",
    ],
    "docs/scaling.md": ["## Scale", "## Past one machine: Spark, score shards and an Airflow cluster"],
}


def test_every_section_of_the_old_readme_has_a_home():
    for page, headings in MOVED.items():
        lines = PAGES[page].splitlines()
        for heading in headings:
            assert heading in lines, f"{page} lacks {heading!r}"


def test_the_settings_table_is_generated_from_settings():
    page = PAGES["docs/configuration.md"]
    block = page.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert block == settings_table(), "docs/configuration.md's settings table is stale: run `make docs-settings`"
    assert with_settings_table(page) == page
    drifted = page.replace("| `50` |", "| `10` |", 1)
    assert drifted != page and with_settings_table(drifted) == page  # a hand edit is caught and regenerated


def test_every_cli_command_is_documented():
    for name in cli.commands:
        assert re.search(rf"recjobs {re.escape(name)}(?![\w-])", EVERYTHING), name


def test_make_targets_named_in_the_docs_exist():
    named = set(re.findall(r"`make ([a-z][a-z-]*)", EVERYTHING)) | set(
        re.findall(r"^make ([a-z][a-z-]*)", EVERYTHING, re.M)
    )
    assert {"run", "test"} <= set(re.findall(r"^make ([a-z][a-z-]*)", README, re.M))
    assert named <= MAKE_TARGETS, named - MAKE_TARGETS


def test_every_benchmark_has_a_make_target_named_in_the_docs():
    """One folder of benchmarks: each script is run by a make target, and that target is named
    in the docs page that quotes its figures."""
    scripts = sorted(p.name for p in (REPO / "tests" / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    assert scripts
    recipes = dict(re.findall(r"^([a-z][a-z-]*):.*\n((?:\t.*\n)+)", MAKEFILE, re.M))
    for script in scripts:
        targets = [t for t, recipe in recipes.items() if f"tests/benchmarks/{script}" in recipe]
        assert targets, f"no make target runs tests/benchmarks/{script}"
        quoting = "\n".join(text for page, text in PAGES.items() if page != "docs/development.md")
        assert any(f"make {t}" in quoting for t in targets), f"no page quoting figures names make {targets[0]}"


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test( +#.*)?$", ci, re.M)
    assert re.search(r"^make test-pythons( +#.*)?$", ci, re.M)  # the same suite on the other Pythons
    assert "make test   # run the tests" in README


def test_each_step_command_shows_its_jobs_docstring():
    import importlib
    import inspect

    from recjobs.cli import STEP_JOBS

    jobs = {**STEP_JOBS, "run": ("pipeline", "run")}
    for command, (module, function) in jobs.items():
        job = getattr(importlib.import_module(f"recjobs.{module}"), function)
        assert job.__doc__ and cli.commands[command].help == inspect.cleandoc(job.__doc__), command


def test_the_layout_in_the_docs_names_every_layer_folder():
    layout = PAGES["docs/development.md"].split("## Layout", 1)[1].split("\n## ", 1)[0]
    for folder in (p for p in (REPO / "recjobs").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert f"{folder.name}/" in layout, folder.name
    assert Path("tests/test_layers.py").as_posix() in layout
