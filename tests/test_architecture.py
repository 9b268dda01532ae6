"""The package's shape: no import cycles, counting the imports inside functions (a cycle hidden
behind a lazy import still ties two modules together), and the layers a reader can rely on."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gelora"
MODULES = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
# Modules that decide a run's numbers never reach up to the ones that schedule or present many runs.
LOWER = ("checks", "config", "methods", "data", "models", "twonn", "probe", "ranks", "targets", "lora_xs", "lora_sb",
         "stats", "metrics", "records")
UPPER = ("train", "grid", "sweep", "cluster", "study", "study_rates", "pipeline", "notebook", "book", "cli", "plots")


def imports(path: Path) -> set[str]:
    """gelora modules that `path` imports anywhere (module level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gelora."):
            found.add(node.module.split(".")[1])
    return found & set(MODULES)


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_imports_itself_back():
    cycles = sorted(name for name in GRAPH if name in reachable(name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_layers_hold():
    crossing = {low: sorted(reachable(low) & set(UPPER)) for low in LOWER}
    assert {k: v for k, v in crossing.items() if v} == {}


def test_the_graph_is_read_from_every_import():
    """The test above could not fail if the parser saw no imports: it sees the known ones."""
    assert {"config", "methods", "data"} <= GRAPH["train"] and "train" in GRAPH["grid"] and "methods" in GRAPH["config"]


def test_the_top_level_api_is_lazy_and_complete():
    """`import gelora` loads no torch; every exported name resolves to the object of its module."""
    import importlib
    import subprocess
    import sys

    probe = "import sys, gelora; print('torch' in sys.modules, 'pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == ["False", "False"]
    import gelora
    import gelora.train  # noqa: F401 - imports every submodule a name could be shadowed by

    for name, module in gelora._EXPORTS.items():  # no exported name is also a submodule's name
        assert name not in MODULES, f"gelora.{name} is both an exported name and a module"
        assert getattr(gelora, name) is getattr(importlib.import_module(f"gelora.{module}"), name), name
    assert set(gelora.__all__) <= set(dir(gelora))
