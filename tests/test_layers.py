"""The architecture, checked: recjobs/ is a package per layer, each imports only the layers
below it, no job imports another job, and no module imports in a circle.

    faces       cli.py, pipeline.py, __main__.py, serving/   (run jobs for a user)
    jobs        jobs/                                         (one module per step or command)
    evaluation  evaluation/                                   (holdout, metrics, report)
    method      method/                                       (the model, scores, bundle, shards)
    storage     storage/                                      (db, artifacts, runs, publish, input)
    core        settings.py, errors.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

RECJOBS = Path(__file__).resolve().parent.parent / "recjobs"
# bottom to top: a module may import its own layer and the ones before it
LAYERS = ("core", "storage", "method", "evaluation", "jobs", "faces")
PACKAGES = {"storage", "method", "evaluation", "jobs", "serving"}
TOP_LEVEL = {"settings": "core", "errors": "core", "cli": "faces", "pipeline": "faces", "__main__": "faces"}


def module_name(path: Path) -> str:
    """recjobs/jobs/load.py -> 'jobs.load'; recjobs/cli.py -> 'cli'; a package's __init__ -> the package."""
    parts = path.relative_to(RECJOBS).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def layer_of(module: str) -> str:
    head = module.split(".")[0]
    if head == "serving":
        return "faces"
    if head in PACKAGES:
        return head
    if head == "__init__":
        return "core"  # recjobs/__init__.py re-exports the errors and Settings only
    return TOP_LEVEL[head]


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The recjobs-relative name `from <level dots><module> import` names in `importer`."""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if importer == "__init__":
        package = []
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join(base + ([module] if module else []))


def recjobs_imports(path: Path) -> set[str]:
    """The recjobs modules a file imports, at any depth of the file, as recjobs-relative dotted names."""
    importer, is_package = module_name(path), path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = resolve(importer, is_package, node.level, node.module)
            elif (node.module or "").split(".")[0] == "recjobs":
                target = node.module.removeprefix("recjobs").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from .storage import db` names the module storage.db
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if is_module(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("recjobs.") for a in node.names if a.name.startswith("recjobs."))
    return {name for name in found if name}


def is_module(name: str) -> bool:
    path = RECJOBS.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(RECJOBS.rglob("*.py")):
        name = module_name(path)
        graph[name] = recjobs_imports(path) - {name}
    return graph


def test_every_module_is_in_a_layer_folder_or_named_at_the_top():
    loose = {p.stem for p in RECJOBS.glob("*.py")} - set(TOP_LEVEL) - {"__init__"}
    assert not loose, f"modules outside the layer folders: {sorted(loose)}; put each in one of {sorted(PACKAGES)}"
    folders = {p.name for p in RECJOBS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == PACKAGES
    for package in PACKAGES:
        init = RECJOBS / package / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} needs a one-line docstring"
    graph = import_graph()
    assert {"storage.db", "storage.publish", "method.model", "evaluation.metrics", "jobs.load"} <= set(graph)
    print("\n".join(f"{name}: {', '.join(sorted(deps)) or '-'}" for name, deps in graph.items()))


def test_each_layer_imports_only_the_layers_below_it():
    for module, deps in import_graph().items():
        mine = LAYERS.index(layer_of(module))
        above = sorted(d for d in deps if LAYERS.index(layer_of(d)) > mine)
        assert not above, f"{module} ({layer_of(module)}) imports {above} from a layer above it"


def test_no_job_imports_another_job():
    for module, deps in import_graph().items():
        if layer_of(module) == "jobs" and module != "jobs":
            others = sorted(d for d in deps if layer_of(d) == "jobs" and d != "jobs")
            assert not others, f"job {module} imports the jobs {others}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle among the modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles_between_modules_or_packages():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    packages = {}
    for module, deps in graph.items():
        head = layer_of(module) if "." not in module and module not in PACKAGES else module.split(".")[0]
        packages.setdefault(head, set()).update(
            d.split(".")[0] if d.split(".")[0] in PACKAGES else layer_of(d) for d in deps
        )
    packages = {name: deps - {name} for name, deps in packages.items()}
    assert find_cycle(packages) is None, " -> ".join(find_cycle(packages))


def test_the_checks_see_every_import_form_and_a_circle(tmp_path, monkeypatch):
    """The checks above would catch a job importing a job, or a circle, in any import form."""
    fake = tmp_path / "recjobs"
    (fake / "jobs").mkdir(parents=True)
    (fake / "storage").mkdir()
    for name in ("jobs/__init__.py", "storage/__init__.py", "storage/db.py", "jobs/split.py", "jobs/load.py"):
        (fake / name).write_text("")
    source = fake / "jobs" / "train.py"
    source.write_text(
        "from . import split\nfrom ..storage import db\nfrom .load import x\nimport recjobs.jobs.load\n"
        "def f():\n    from recjobs.storage.db import sql\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "RECJOBS", fake)
    assert recjobs_imports(source) == {"jobs.split", "storage.db", "jobs.load"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
