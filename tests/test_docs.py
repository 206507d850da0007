"""The README kept honest: settings, commands and make targets it names exist."""

import re

from recjobs.cli import cli
from recjobs.settings import setting_help
from support import REPO

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def test_every_setting_is_in_the_readme_table_with_its_default():
    for name, (default, _) in setting_help().items():
        row = f"| `--{name.replace('_', '-')}` | `RECJOBS_{name.upper()}` | `{default}` |"
        assert row in README, f"README settings table lacks or misstates {name}"


def test_every_cli_command_is_documented():
    for name in cli.commands:
        assert re.search(rf"recjobs {re.escape(name)}(?![\w-])", README), name


def test_make_targets_named_in_the_readme_exist():
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README)) | set(re.findall(r"^make ([a-z][a-z-]*)", README, re.M))
    assert {"run", "test"} <= named
    assert named <= targets, named - targets


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
