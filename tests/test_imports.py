"""No import cycle and no upward import between the package's modules (read from the source, not imported).

Every `import` counts, at module level or inside a function: a function-level import only postpones the
dependency. Importing `a.b.c` also runs the packages `a.b` and `a` (unless the importer is inside them),
and a package whose __init__ imports its modules through importlib (bnrepro/data: every data module's
schema) depends on all of them.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bnrepro"

# A module may import its own layer and the layers above it in this table, never one below it.
LAYERS = [
    # Leaves: the project's errors and records, and what every layer reads (no project imports of their own).
    ("leaves", ["bnrepro", "bnrepro.errors", "bnrepro.provenance", "bnrepro.variants", "bnrepro.runlock",
                "bnrepro.lightning_compat", "bnrepro.run_status", "bnrepro.safe_load", "bnrepro.console"]),
    # The config schema and its checks; the entry points' shared exit handling (reads the schema).
    ("config", ["bnrepro.config", "bnrepro.entry"]),
    # Components built from config: the networks and the data modules.
    ("components", ["bnrepro.models", "bnrepro.data"]),
    # The schemas put in Hydra's ConfigStore (they live with the data modules), and composing conf/ for
    # the commands that are not Hydra apps (`python -m bnrepro.data.prepare`, bench/).
    ("registry", ["bnrepro.registry", "bnrepro.compose"]),
    # What the Trainer runs: the LightningModules and the callbacks.
    ("training", ["bnrepro.lit", "bnrepro.callbacks"]),
    # A run (or an evaluation) planned and executed, and what it writes.
    ("runs", ["bnrepro.checkpointing", "bnrepro.loggers", "bnrepro.speed", "bnrepro.launching",
              "bnrepro.launch_record", "bnrepro.plan", "bnrepro.run", "bnrepro.evaluation",
              "bnrepro.data.prepare"]),  # a command (data/__init__'s COMMANDS): it composes conf/
    # Readers of finished runs and measurements of the rest; only the entry points import them.
    ("reports", ["bnrepro.results", "bnrepro.bench"]),
]  # fmt: skip


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every module and package under `package` (pkgutil.iter_modules per folder:
    walk_packages would import the packages)."""
    found, todo = {package.name: package / "__init__.py"}, [(package, package.name)]
    while todo:
        folder, prefix = todo.pop()
        for info in pkgutil.iter_modules([str(folder)], prefix=f"{prefix}."):
            path = folder / info.name.rpartition(".")[2]
            found[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
            if info.ispkg:
                todo.append((path, info.name))
    return found


def imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the project's modules its import statements run (see the module docstring)."""
    mods, graph = modules(package), {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]  # the package relative imports start from
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
            elif is_pkg and isinstance(node, ast.Attribute) and node.attr == "import_module":
                targets |= {
                    m
                    for m in mods
                    if m.startswith(f"{name}.")
                    and m.count(".") == name.count(".") + 1
                    and m.rpartition(".")[2] not in package_commands(path)
                }
        edges = set()
        for target in targets:
            parts = target.split(".")
            while parts and ".".join(parts) not in mods:  # `from m import function`: the module m
                parts.pop()
            while parts:  # the module, and the packages above it that the importer is not inside
                if not (name == ".".join(parts) or name.startswith(".".join(parts) + ".")):
                    edges.add(".".join(parts))
                parts.pop()
        graph[name] = edges
    return graph


def package_commands(init: Path) -> set[str]:
    """The `COMMANDS = {...}` literal of a package's __init__: modules its import loop skips."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMMANDS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def layer(module: str) -> int | None:
    hits = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
            if module == prefix or (module.startswith(prefix + ".") and prefix != PACKAGE.name)]  # fmt: skip
    return max(hits)[1] if hits else None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0]})"
            for m, targets in sorted(graph.items()) for t in sorted(targets) if layer(t) > layer(m)]  # fmt: skip


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer(m) is None] == [], (
        "add the module to LAYERS in tests/test_imports.py"
    )


def test_no_import_cycle():
    cycle = find_cycle(imports())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_no_upward_import():
    assert upward(imports()) == [], "move the shared piece down, or the module in LAYERS"


def test_the_walk_sees_function_level_relative_and_package_imports(tmp_path):
    """The checks can fail: a made-up package with a cycle through a function-level import."""
    pkg = tmp_path / "bnrepro"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("import importlib\nimportlib.import_module('x')\n")
    (pkg / "data" / "loader.py").write_text("def f():\n    from ..callbacks import stop\n")
    (pkg / "callbacks.py").write_text("from bnrepro.data.loader import f\n")
    graph = imports(pkg)
    assert graph["bnrepro.data"] == {"bnrepro.data.loader"}
    assert graph["bnrepro.data.loader"] == {"bnrepro.callbacks"}
    assert graph["bnrepro.callbacks"] == {"bnrepro.data.loader", "bnrepro.data"}
    assert find_cycle(graph) == [
        "bnrepro.callbacks",
        "bnrepro.data",
        "bnrepro.data.loader",
        "bnrepro.callbacks",
    ]
    assert upward(graph) == ["bnrepro.data.loader (components) imports bnrepro.callbacks (training)"]
