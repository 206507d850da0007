"""The architecture, checked: recjobs/ is layered, and no job imports another job."""

from __future__ import annotations

import ast
from pathlib import Path

RECJOBS = Path(__file__).resolve().parent.parent / "recjobs"
# The jobs: each is a command and (but tune, fetch, synth, backtest) a DAG task.
# They may import the library, not each other.
JOBS = {
    "load",
    "split",
    "train",
    "evaluate",
    "precompute",
    "cold_start",
    "cold_start_eval",
    "tune",
    "fetch",
    "synth",
    "backtest",
}
# The faces: they run jobs for a user (CLI, `recjobs run`, datasette).
FACES = {"cli", "pipeline", "serve", "datasette_plugin", "__main__"}


def recjobs_imports(path: Path) -> set[str]:
    """The recjobs modules a file imports (at any depth of the file), by module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("recjobs")):
            module = (node.module or "").removeprefix("recjobs").lstrip(".")
            if module:
                found.add(module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("recjobs."))
    return found


def import_graph() -> dict[str, set[str]]:
    return {path.stem: recjobs_imports(path) - {path.stem} for path in sorted(RECJOBS.glob("*.py"))}


def test_every_module_is_a_job_a_face_or_the_library():
    graph = import_graph()
    library = set(graph) - JOBS - FACES - {"__init__"}
    assert JOBS <= set(graph) and FACES <= set(graph)
    assert {"artifacts", "db", "runs", "settings", "model", "publish", "holdout", "scoring"} <= library
    print("\n".join(f"{name}: {', '.join(sorted(deps)) or '-'}" for name, deps in graph.items()))


def test_no_job_imports_another_job():
    for job, deps in import_graph().items():
        if job in JOBS:
            assert not deps & JOBS, f"job {job} imports the jobs {sorted(deps & JOBS)}"


def test_the_library_imports_no_job_and_no_face():
    for module, deps in import_graph().items():
        if module not in JOBS | FACES:
            assert not deps & (JOBS | FACES), f"{module} imports {sorted(deps & (JOBS | FACES))}"


def test_the_graph_checker_sees_imports(tmp_path):
    """The checks above would catch a job importing a job, in any import form."""
    source = tmp_path / "x.py"
    source.write_text(
        "from . import db, split\nfrom .train import fit\nimport recjobs.load\n"
        "def f():\n    from .evaluate import evaluate\n"
    )
    assert recjobs_imports(source) == {"db", "split", "train", "load", "evaluate"}
