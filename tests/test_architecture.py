"""The package's shape: no import cycles, counting the imports inside functions (a cycle hidden
behind a lazy import still ties two modules together), and the layers a reader can rely on."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gelora"
# The subpackages in the order of the architecture: each imports only from itself and those before it.
LAYERS = ("core", "geometry", "data", "models", "probing", "allocation", "adapters", "methods", "training", "analysis",
          "kit", "study")
MODULES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")
           if p.stem not in ("__init__", "__main__")}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0]) if "." in module else len(LAYERS)  # cli: the top


def imports(name: str, path: Path) -> set[str]:
    """gelora modules that `path` imports anywhere (module level or inside a function)."""
    found, package = set(), name.rsplit(".", 1)[0] if "." in name else ""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # relative: resolved against the module's own package
            base = ".".join(filter(None, [package, node.module or ""])) if node.level == 1 else (node.module or "")
        elif (node.module or "").startswith("gelora."):
            base = node.module[len("gelora."):]
        else:
            continue
        found |= {base} | {f"{base}.{a.name}" for a in node.names}  # from gelora.kit import plots: the module
    return found & set(MODULES)


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_module_lives_in_a_layer():
    assert {m.split(".")[0] for m in MODULES if "." in m} == set(LAYERS)
    assert [m for m in MODULES if "." not in m] == ["cli"]


def test_no_module_imports_itself_back():
    cycles = sorted(name for name in GRAPH if name in reachable(name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_no_layer_reaches_up():
    upward = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets if layer(b) > layer(a))
    assert upward == []


def test_the_graph_is_read_from_every_import():
    """The tests above could not fail if the parser saw no imports: it sees the known ones,
    lazy ones inside functions and `from gelora.pkg import module` ones included."""
    assert {"training.config", "methods.registry", "data.tasks"} <= GRAPH["training.train"]
    assert "training.train" in GRAPH["study.grid"] and "methods.registry" in GRAPH["training.config"]
    assert "kit.plots" in GRAPH["kit.notebook"] and "study.grid" in GRAPH["study.command"]


def test_the_top_level_api_is_lazy_and_complete():
    """`import gelora` loads no torch; every exported name resolves to the object of its module."""
    import importlib
    import subprocess
    import sys

    probe = "import sys, gelora; print('torch' in sys.modules, 'pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == ["False", "False"]
    import gelora
    import gelora.training.train  # noqa: F401 - imports every submodule a name could be shadowed by

    for name, module in gelora._EXPORTS.items():  # no exported name is also a subpackage's or module's name
        assert name not in LAYERS and name not in MODULES, f"gelora.{name} is both an exported name and a module"
        assert getattr(gelora, name) is getattr(importlib.import_module(f"gelora.{module}"), name), name
    assert set(gelora.__all__) <= set(dir(gelora))


def test_the_guide_describes_every_layer_in_order():
    text = (PACKAGE.parent / "docs" / "GUIDE.md").read_text()
    positions = [text.find(f"\n  {name}/ ") for name in LAYERS]
    assert -1 not in positions and positions == sorted(positions), dict(zip(LAYERS, positions))


def test_the_config_is_pure():
    """FinetuneConfig holds and checks settings; reading files and weights for a run's identity is
    gelora.training.identity's, which the config never imports."""
    assert GRAPH["training.config"] == {"core.checks", "core.paths", "core.plan", "methods.registry"}  # the registry: method names
    assert GRAPH["core.paths"] == set()  # lexical path arithmetic only: the config still does no I/O
    assert "training.identity" not in reachable("training.config")


def test_no_module_is_over_400_lines():
    """One concept per module: a module past 400 lines holds more than one (split it, keeping the
    names notebooks import re-exported where they read them)."""
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
    assert len(MODULES) > 60  # the walk saw the package
