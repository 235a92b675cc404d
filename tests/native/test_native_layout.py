"""The native layer is closed: every extension module has a .pxd (what other
modules may cimport) and a .pyi (what Python and mypy see), the stubs say
what the compiled modules really export, and nothing in fastgw/_native
imports from the layers above it.
"""
from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "fastgw" / "_native"
MODULES = sorted(p.stem for p in NATIVE.glob("*.pyx"))

# Public names of a compiled module its .pyi does not declare, with the reason.
# (Imported modules are skipped without being listed.)
NOT_IN_STUB = {
    "concurrency": {
        "ProxyError": "imported from fastgw._native.errors for its own refusals",
        "WAIT": "imported from fastgw._native.proxy, where it is declared",
    },
    "proxy": {
        "log": "the module's logger",
        "ProxyError": "imported from fastgw._native.errors for its own replies",
        "CONTINUE_100": "imported from fastgw._native.errors",
        "error_reply": "imported from fastgw._native.errors",
    },
}

# The layers above fastgw/_native: it may import none of them.
UPPER_LAYERS = ("fastgw.proxy", "fastgw.policy", "fastgw.upstream", "fastgw.observe")

# Native sources that still import upward. The lead empties this set when
# proxy.pyx is split and its imports of fastgw.proxy.errors and
# fastgw.proxy.tunnel move down (test_pending_upward_imports_still_pending
# fails once an entry here no longer imports upward, so it can't go stale).
PENDING_UPWARD_IMPORTS: set[str] = set()

# Modules whose .pxd is still to come, with the split of proxy.pyx (the lead's
# change); emptied then (test_pending_pxd_still_missing keeps it honest).
PENDING_PXD = {"proxy"}

_IMPORT_LINE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\b|c?import\s+([\w.,\s]+?)\s*(?:#.*)?$)")


def _stub(name: str) -> ast.Module:
    return ast.parse((NATIVE / f"{name}.pyi").read_text(), f"{name}.pyi")


def _declared(body: list[ast.stmt]) -> set[str]:
    """Names a stub's module or class body declares (imports only when re-exported `as` themselves)."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname for a in node.names if a.asname is not None and a.asname == a.name)
    return names


def _upward_imports(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        targets = [match.group(1)] if match.group(1) else [t.strip() for t in match.group(2).split(",")]
        for target in targets:
            target = target.split(" as ")[0].strip()
            if any(target == layer or target.startswith(layer + ".") for layer in UPPER_LAYERS):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_the_native_modules_are_found():
    assert {"codes", "router", "headers", "proxy", "metrics"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_pyx_has_a_pxd_and_a_pyi(name):
    missing = [f"{name}{ext}" for ext in (".pxd", ".pyi") if not (NATIVE / f"{name}{ext}").exists()]
    if name in PENDING_PXD and missing == [f"{name}.pxd"]:
        pytest.xfail(f"{name}.pxd is pending (PENDING_PXD)")
    assert not missing, f"fastgw/_native/{name}.pyx has no {' or '.join(missing)}"


@pytest.mark.parametrize("name", sorted(PENDING_PXD))
def test_pending_pxd_still_missing(name):
    assert not (NATIVE / f"{name}.pxd").exists(), f"{name}.pxd exists: remove {name!r} from PENDING_PXD"


@pytest.mark.parametrize("name", MODULES)
def test_stub_declares_what_the_module_has(name):
    module = importlib.import_module(f"fastgw._native.{name}")
    tree = _stub(name)
    declared = {n for n in _declared(tree.body) if not n.startswith("_")}  # _Alias: the stub's own
    absent = sorted(n for n in declared if not hasattr(module, n))
    assert not absent, f"{name}.pyi declares names the compiled module does not have: {absent}"

    allowed = NOT_IN_STUB.get(name, {})
    public = {n for n in dir(module) if not n.startswith("_")
              and not isinstance(getattr(module, n), types.ModuleType)}
    undeclared = sorted(public - declared - set(allowed))
    assert not undeclared, f"{name} has public names its .pyi does not declare: {undeclared}"
    stale = sorted(n for n in allowed if n in declared or n not in public)
    assert not stale, f"NOT_IN_STUB[{name!r}] lists names that are declared or gone: {stale}"


@pytest.mark.parametrize("name", MODULES)
def test_stub_classes_match_the_compiled_classes(name):
    """Each class in a stub: every member it declares exists, and every public
    member the compiled class defines (methods, properties, cdef public and
    readonly fields; members of classes from other modules excluded) is
    declared, on it or on a base class of the same stub. Exceptions are
    skipped: their attributes are set per instance."""
    module = importlib.import_module(f"fastgw._native.{name}")
    classes = {node.name: node for node in _stub(name).body if isinstance(node, ast.ClassDef)}
    problems = []
    for cls_name, node in classes.items():
        cls = getattr(module, cls_name)
        if issubclass(cls, BaseException):
            continue
        declared = _declared(node.body)
        for base in node.bases:  # members declared on a base in the same stub count too
            if isinstance(base, ast.Name) and base.id in classes:
                declared |= _declared(classes[base.id].body)
        absent = sorted(m for m in declared - {"__init__"} if not hasattr(cls, m))
        if absent:
            problems.append(f"{cls_name}: declared but absent {absent}")
        own = {m for klass in cls.__mro__ if klass.__module__ == module.__name__
               for m in vars(klass) if not m.startswith("_")}
        undeclared = sorted(own - declared)
        if undeclared:
            problems.append(f"{cls_name}: public but not in the stub {undeclared}")
    assert not problems, f"{name}.pyi: " + "; ".join(problems)


def _native_sources() -> list[Path]:
    return sorted(p for p in NATIVE.rglob("*") if p.suffix in (".pyx", ".pxd", ".pxi", ".py"))


def test_native_imports_nothing_from_the_layers_above():
    found = [hit for path in _native_sources() if path.name not in PENDING_UPWARD_IMPORTS
             for hit in _upward_imports(path)]
    assert not found, ("fastgw/_native imports from " + ", ".join(UPPER_LAYERS)
                       + " (move down what it needs):\n" + "\n".join(found))


@pytest.mark.parametrize("name", sorted(PENDING_UPWARD_IMPORTS))
def test_pending_upward_imports_still_pending(name):
    """Known upward imports, kept visible: once one is gone, its entry must go."""
    assert (NATIVE / name).exists(), f"{name} is gone: remove it from PENDING_UPWARD_IMPORTS"
    hits = _upward_imports(NATIVE / name)
    assert hits, f"{name} no longer imports upward: remove it from PENDING_UPWARD_IMPORTS"
    pytest.xfail(f"{name} still imports upward (the lead's split removes it): " + "; ".join(hits))
