"""The layout rules that keep colabkit readable: checked on the source, not by convention.

- no module imports another module's underscored names (shared helpers get a
  public-within-the-package name in a private module);
- no import circle between colabkit's modules at import time;
- google.colab is imported only by colabkit/_colab.py;
- every public name is exported from colabkit/__init__.py alone, documented in
  the README, and the lazy export table agrees with the editors' block.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import colabkit

PACKAGE = Path(colabkit.__file__).parent
README = PACKAGE.parent / "README.md"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        found[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, tree: ast.Module, top_level_only: bool):
    is_package = (PACKAGE.parent / Path(*name.split("."))).is_dir()
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            yield node, _resolve(name, node, is_package)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name, tree in _modules().items():
        for node, target in _imports(name, tree, top_level_only=False):
            if not target.startswith("colabkit") or not isinstance(node, ast.ImportFrom):
                continue
            if target == name:
                continue
            for alias in node.names:
                # importing a private *module* is how the package is layered; a private *name* is not
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*sub.split("."))).is_dir()
                if alias.name.startswith("_") and not alias.name.startswith("__") and not is_module:
                    offences.append(f"{name} imports {target}.{alias.name}")
    assert offences == []


def test_no_module_reads_another_modules_private_attributes():
    offences = []
    for name, tree in _modules().items():
        aliases = {}
        for node, target in _imports(name, tree, top_level_only=False):
            if isinstance(node, ast.ImportFrom) and target.startswith("colabkit"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                            PACKAGE.parent / Path(*sub.split("."))).is_dir():
                        aliases[alias.asname or alias.name] = sub
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__") and aliases[node.value.id] != name):
                offences.append(f"{name} reads {aliases[node.value.id]}.{node.attr}")
    assert offences == []


def test_no_import_circle_at_import_time():
    graph: dict[str, set[str]] = {}
    modules = _modules()
    for name, tree in modules.items():
        edges = set()
        for node, target in _imports(name, tree, top_level_only=True):
            if isinstance(node, ast.ImportFrom) and target.startswith("colabkit"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in modules else target)
            elif target.startswith("colabkit"):
                edges.add(target)
        graph[name] = {e for e in edges if e in modules and e != name and e != "colabkit"}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_only_colab_module_imports_google_colab():
    importers = sorted({name for name, tree in _modules().items()
                       for _node, target in _imports(name, tree, top_level_only=False)
                       if target.startswith("google.colab")})
    assert importers == ["colabkit._colab"]


def test_every_public_name_is_documented_in_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = [name for name in colabkit.__all__
               if name not in ("__version__", "load_ipython_extension")
               and not re.search(rf"\b{re.escape(name)}\b", text)]
    assert missing == []


def test_export_table_and_editor_block_agree():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    typed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    for alias in imp.names:
                        typed[alias.name] = (imp.module or "").lstrip(".")
    assert typed == colabkit._EXPORTS


def test_every_exported_name_resolves_where_the_table_says():
    import importlib

    for name, module in colabkit._EXPORTS.items():
        if module.startswith("_drive_api"):
            continue  # needs the drive-api extra; covered by the Drive API tests
        assert getattr(importlib.import_module(f"colabkit.{module}"), name) is getattr(colabkit, name)
