"""Outcome and stream codes are defined once, in fastgw/_native/codes.pxd:
the Python ints of fastgw._native.codes are the C constants every native
module compiles in, and no other source defines or copies them.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastgw._native import codes, metrics

ROOT = Path(__file__).resolve().parents[2]
C_NAMES = ("OUTCOME_OK", "OUTCOME_CONNECT", "OUTCOME_TIMEOUT", "OUTCOME_RESET", "OUTCOME_BAD_RESPONSE",
           "OUTCOME_5XX", "OUTCOME_CANCELLED", "N_OUTCOMES", "STREAM_SSE", "STREAM_WS", "N_STREAM_KINDS")
PY_ALIASES = {"OK": "OUTCOME_OK", "CONNECT_FAILURE": "OUTCOME_CONNECT", "TIMEOUT": "OUTCOME_TIMEOUT",
              "RESET": "OUTCOME_RESET", "BAD_RESPONSE": "OUTCOME_BAD_RESPONSE", "STATUS_5XX": "OUTCOME_5XX",
              "CANCELLED": "OUTCOME_CANCELLED"}

# A module that cimports the codes from codes.pxd, and through metrics.pxd as
# proxy.pyx does, and hands the C values back to Python.
PROBE_PYX = """
# cython: language_level=3
from fastgw._native.codes cimport (
    N_OUTCOMES, N_STREAM_KINDS, OUTCOME_5XX, OUTCOME_BAD_RESPONSE, OUTCOME_CANCELLED, OUTCOME_CONNECT,
    OUTCOME_OK, OUTCOME_RESET, OUTCOME_TIMEOUT, STREAM_SSE, STREAM_WS,
)
from fastgw._native cimport metrics

def c_values():
    return {"OUTCOME_OK": OUTCOME_OK, "OUTCOME_CONNECT": OUTCOME_CONNECT, "OUTCOME_TIMEOUT": OUTCOME_TIMEOUT,
            "OUTCOME_RESET": OUTCOME_RESET, "OUTCOME_BAD_RESPONSE": OUTCOME_BAD_RESPONSE,
            "OUTCOME_5XX": OUTCOME_5XX, "OUTCOME_CANCELLED": OUTCOME_CANCELLED, "N_OUTCOMES": N_OUTCOMES,
            "STREAM_SSE": STREAM_SSE, "STREAM_WS": STREAM_WS, "N_STREAM_KINDS": N_STREAM_KINDS}

def through_metrics():
    return {"STREAM_SSE": metrics.STREAM_SSE, "STREAM_WS": metrics.STREAM_WS, "N_OUTCOMES": metrics.N_OUTCOMES}
"""

PROBE_SETUP = """
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("codes_probe", ["codes_probe.pyx"], include_dirs=[{includes!r}])],
                            include_path=[{root!r}], language_level=3, quiet=True))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    pytest.importorskip("Cython", reason="Cython is needed to compile the codes probe")
    pytest.importorskip("setuptools", reason="setuptools is needed to compile the codes probe")
    if not (ROOT / "fastgw" / "_native" / "codes.pxd").exists():
        pytest.skip("fastgw/_native/codes.pxd is not next to the installed module")
    build = tmp_path_factory.mktemp("codes_probe")
    (build / "codes_probe.pyx").write_text(PROBE_PYX)
    (build / "setup.py").write_text(PROBE_SETUP.format(root=str(ROOT),
                                                       includes=str(ROOT / "fastgw" / "_native" / "includes")))
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=build,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"compiling the probe failed:\n{done.stdout}\n{done.stderr}"
    [built] = [p for p in build.iterdir()
               if p.name.startswith("codes_probe.")
               and any(p.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)]
    spec = importlib.util.spec_from_file_location("codes_probe", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_values_are_the_c_values(probe):
    assert probe.c_values() == {name: getattr(codes, name) for name in C_NAMES}
    assert probe.through_metrics() == {name: getattr(codes, name) for name in probe.through_metrics()}


def test_python_aliases_and_name_tables():
    for alias, name in PY_ALIASES.items():
        assert getattr(codes, alias) == getattr(codes, name), alias
    values = [getattr(codes, name) for name in C_NAMES if name.startswith("OUTCOME_")]
    assert sorted(values) == list(range(codes.N_OUTCOMES))       # dense: they index metric cells
    assert len(codes.OUTCOME_NAMES) == codes.N_OUTCOMES
    assert sorted((codes.STREAM_SSE, codes.STREAM_WS)) == list(range(codes.N_STREAM_KINDS))
    assert len(codes.STREAM_NAMES) == codes.N_STREAM_KINDS
    # Label values of fastgw_upstream_errors_total and fastgw_streams_*: part of the metrics.
    assert [codes.OUTCOME_NAMES[c] for c in (codes.CONNECT_FAILURE, codes.TIMEOUT, codes.RESET,
                                             codes.BAD_RESPONSE)] == ["connect", "timeout", "reset", "bad_response"]
    assert codes.STREAM_NAMES[codes.STREAM_SSE] == "sse" and codes.STREAM_NAMES[codes.STREAM_WS] == "websocket"


def test_metrics_layout_is_sized_by_the_codes():
    """metrics.pxd's blocks, compiled from the same constants."""
    layout = metrics.LAYOUT
    assert layout["N_OUTCOMES"] == codes.N_OUTCOMES
    assert layout["E_IDLE"] - layout["E_OUTCOMES"] == codes.N_OUTCOMES
    assert layout["G_STREAMS_CLOSED"] - layout["G_STREAMS_OPENED"] == codes.N_STREAM_KINDS
    assert layout["GLOBAL_CELLS"] - layout["G_STREAMS_ACTIVE"] == codes.N_STREAM_KINDS


# A definition or hand copy of a code anywhere but codes.pxd / codes.pyx.
_CODE_NAMES = r"(?:OUTCOME_\w+|N_OUTCOMES|STREAM_(?:SSE|WS|WEBSOCKET)|N_STREAM_KINDS)"
_ALIASES = r"(?:" + "|".join(PY_ALIASES) + r")"
DEFINITIONS = [
    re.compile(rf"^\s*(?:DEF\s+)?{_CODE_NAMES}\s*=(?!=)"),           # DEF OUTCOME_OK = 0, STREAM_WS = 1
    re.compile(rf"^\s*{_CODE_NAMES}\s*(?:#.*)?$"),                     # a member of a cdef enum block
    re.compile(rf"^\s*{_ALIASES}\s*=\s*\d"),                           # OK = 0
    re.compile(rf"\b{_ALIASES}\b(?:\s*,\s*\w+)+\s*=\s*range\("),       # OK, CONNECT_FAILURE, ... = range(7)
    re.compile(r"""\{\s*1\s*:\s*["']connect["']"""),                   # {1: "connect", ...}
    re.compile(r"""\(\s*["']sse["']\s*,\s*["']websocket["']\s*\)"""),  # ("sse", "websocket")
]
HOME = {"codes.pxd", "codes.pyx", "codes.pyi"}


def test_no_other_source_defines_the_codes():
    found = []
    for path in sorted((ROOT / "fastgw").rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd", ".pxi", ".pyi", ".h") or path.name in HOME:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(pattern.search(line) for pattern in DEFINITIONS):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "codes defined outside fastgw/_native/codes.pxd (cimport or import them):\n" + "\n".join(found)
