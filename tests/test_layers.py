"""The house has floors, and imports only go down (issue 23): CLI -> config -> build -> train ->
run folder -> evaluation -> apps and experiments. Read from the source with `ast`, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spreadcon"

# The floor of each top-level module or package of spreadcon, from the bottom up. A module may
# import modules of a lower floor, and modules of its own package.
FLOORS = [
    {"io", "errors", "progress"},
    {"data", "models", "distributed", "group_dro"},
    {"losses"},
    {"config", "recipes"},
    {"evaluate"},
    {"checkpoint"},
    {"build"},
    {"run_lock"},
    {"runs"},
    {"groups"},
    {"train"},
    {"evaluation", "theory"},
    {"apps"},
    {"experiments"},
    {"commands"},
    {"cli", "__init__"},
    {"__main__"},
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def top(module: str) -> str:
    """spreadcon.losses.core -> losses; spreadcon -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def own_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported spreadcon module, line, inside a function) for every import of `path`."""
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spreadcon"):
            names = [node.module] if node.module != "spreadcon" else [f"spreadcon.{a.name}" for a in node.names]
            found += [(n, node.lineno, id(node) in nested) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in nested) for a in node.names if a.name.startswith("spreadcon.")]
    return found


def modules() -> list[tuple[Path, str]]:
    return [(p, top("spreadcon." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)))
            for p in sorted(PACKAGE.rglob("*.py"))]


def test_every_module_has_a_floor():
    assert sorted({home for _, home in modules()} - set(FLOOR)) == []


def test_imports_only_go_down():
    upward = [f"{path.relative_to(PACKAGE)}:{line} imports {name} (floor {FLOOR[top(name)]} > {FLOOR[home]})"
              for path, home in modules() for name, line, _ in own_imports(path)
              if top(name) != home and FLOOR[top(name)] >= FLOOR[home]]
    assert upward == []


def test_our_imports_sit_at_the_top_of_each_file_but_in_commands():
    """Imports inside functions only in commands/ (start-up time of --help) and the package face."""
    inside = [f"{path.relative_to(PACKAGE)}:{line} {name}" for path, home in modules()
              for name, line, nested in own_imports(path) if nested and home not in ("commands", "cli")]
    assert inside == []
