"""fastgw's modules import each other without cycles.

The graph is built from the sources: every module-level import of
fastgw/**/*.py (from the AST; imports inside functions are deliberate late
imports and are skipped, as are `if TYPE_CHECKING:` blocks) and of
fastgw/_native/*.pyx with its .pxd and included files (import and cimport
lines at the left margin: a cimport of an extension type imports its module
at run time too). An edge goes to
the module an import needs (`from a.b import c`: a.b.c if it is a module,
else a.b), not to the packages above it: Python runs their __init__ first,
but a submodule that uses nothing of its package's namespace does not
depend on it (the usual package that re-exports its submodules is no cycle). A
strongly connected component of more than one module is a cycle: its
modules only import in some orders.

A late import inside a function is how a module says "not at import
time", so it is no edge. (The one that hid a cycle, config/retry_section.py
importing parse_ratio from config/sections.py, is gone: parse_ratio lives
with the other value parsers in config/schema.py.)

Then every module is imported alone in a fresh interpreter, which catches
what the static graph can't see (an import that only works because another
module happened to be imported first).
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fastgw"

_PYX_IMPORT = re.compile(r"^(?:from\s+([\w.]+)\s+c?import\s+(.+)|c?import\s+([\w.,\s]+?))\s*(?:#.*)?$")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found.update({module_name(p): p for p in (PACKAGE / "_native").glob("*.pyx")})
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module):
    """Import nodes run when the module is imported: not inside functions or
    lambdas, not under `if TYPE_CHECKING:`; class bodies and try/if/with
    blocks at module level count."""
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(reversed(node.orelse))
        else:
            stack.extend(reversed([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]))


def _targets(importer: str, is_package: bool, base: str | None, level: int, names: list[str],
             modules: dict[str, Path]) -> set[str]:
    """Modules an import statement depends on: each imported name that is a
    module, and `base` (resolved if relative) when a name is not one."""
    if level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[:len(package) - (level - 1)]
        base = ".".join(package + ([base] if base else []))
    if not base:
        return set()
    submodules = {f"{base}.{n}" for n in names} & modules.keys()
    # `from pkg import submodule` needs the submodule, not pkg's namespace.
    needs_base = not names or len(submodules) < len(names)  # no names: a `cimport (` continued below
    return submodules | ({base} & modules.keys() if needs_base else set())


def _cython_lines(pyx: Path) -> list[str]:
    """An extension module's source: its .pyx, its .pxd, and the files they `include`."""
    lines: list[str] = []
    pending = [pyx, pyx.with_suffix(".pxd")]
    seen = set()
    while pending:
        path = pending.pop(0)
        if path in seen or not path.exists():
            continue
        seen.add(path)
        for line in path.read_text().splitlines():
            included = re.match(r"""^include\s+["']([^"']+)["']""", line)
            if included:
                pending.append(path.parent / included.group(1))
            lines.append(line)
    return lines


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        edges = graph[name]
        is_package = path.name == "__init__.py"
        if path.suffix == ".py":
            for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name in modules:
                            edges.add(alias.name)
                else:
                    edges.update(_targets(name, is_package, node.module, node.level,
                                          [a.name for a in node.names], modules))
        else:
            for line in _cython_lines(path):
                match = _PYX_IMPORT.match(line)
                if not match:
                    continue
                if match.group(1):
                    names = [n.strip().split(" as ")[0] for n in match.group(2).strip("()").split(",")]
                    edges.update(_targets(name, False, match.group(1), 0, [n for n in names if n], modules))
                else:
                    targets = {t.split(" as ")[0].strip() for t in match.group(3).split(",")}
                    edges.update(targets & modules.keys())
        edges.discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)]
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(edges)


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert {"fastgw.cli", "fastgw.observe.metrics", "fastgw._native.proxy"} <= set(graph)
    assert "fastgw._native.headers" in graph["fastgw.proxy.errors"] or \
           "fastgw._native.errors" in graph["fastgw.proxy.errors"]
    assert "fastgw._native.deadlines" in graph["fastgw._native.proxy"]  # a cimport counts


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, graph) for c in found)


def test_every_module_imports_alone():
    """Each module in its own fresh interpreter (one subprocess runs them one
    after another, each in a new child, to keep process starts bounded)."""
    names = sorted(n for n in all_modules() if n != "fastgw.__main__")
    script = (
        "import subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    done = subprocess.run([sys.executable, '-c', 'import ' + name], capture_output=True, text=True)\n"
        "    if done.returncode:\n"
        "        failed.append(name + ':\\n' + done.stderr.strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"modules that fail to import alone:\n{done.stdout}{done.stderr}"
