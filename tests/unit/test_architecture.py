"""The package's shape, checked from its source: few top-level modules, no import cycle, the store independent of
the trainer, and every import inside a function a deliberate, commented lazy one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "src" / "upcycle"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def module_level_imports(name: str) -> set[str]:
    """The upcycle modules ``name`` imports when it is itself imported (not in functions or TYPE_CHECKING)."""
    path = MODULES[name]
    targets: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name.startswith("upcycle")}
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node.level, node.module) if node.level else node.module
            if not target or not target.startswith("upcycle"):
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(MODULES)
            targets |= submodules or {target}
    edges = set()
    for target in targets:  # importing a.b.c imports the packages a.b and a first, unless the importer is inside
        parts = target.split(".")
        edges |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)
                  if not (name + ".").startswith(".".join(parts[:i]) + ".")}
    return edges & set(MODULES) - {name}


GRAPH = {name: module_level_imports(name) for name in MODULES}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_at_most_eight_top_level_modules_beside_the_capability_packages():
    top = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem not in ("__init__", "__main__"))
    assert len(top) <= 8, top


def test_no_import_cycle():
    cycles = [name for name in MODULES if name in reachable(name)]
    assert cycles == []


def test_the_store_and_the_specs_never_import_the_trainer():
    for name in ("upcycle.store", "upcycle.specs"):
        assert not any(module.startswith("upcycle.training") for module in reachable(name)), name


def test_the_cli_help_path_imports_neither_torch_pandas_nor_ray():
    heavy = {"torch", "pandas", "ray", "transformers", "sklearn", "scipy"}
    for name in reachable("upcycle.cli") | {"upcycle.cli"}:
        tree = ast.parse(MODULES[name].read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
                and not node.level}
        assert not top & heavy, (name, top & heavy)


def test_every_import_inside_a_function_is_a_commented_lazy_one():
    undocumented = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom) and "# lazy" not in lines[inner.lineno - 1]:
                        undocumented.append(f"{name}:{inner.lineno}")
    assert undocumented == []
