"""Shared fixtures for the config and CLI tests.

Helpers are handed out as fixtures rather than imported: several test
directories may have a conftest.py, so `from conftest import ...` is ambiguous.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastgw.config import ConfigError, load

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "gateway.yaml"

# The smallest valid config; tests append to or replace parts of it.
MINIMAL = """
clusters:
  users:
    endpoints: [http://127.0.0.1:9001]
routes:
  - match: {prefix: /}
    cluster: users
"""


@pytest.fixture
def write_config(tmp_path):
    """write_config(yaml_text) -> path of a file holding the dedented text."""
    def write(text: str, name: str = "gateway.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path
    return write


@pytest.fixture
def config_errors(write_config):
    """config_errors(yaml_text, env={}) -> (path, error lines); fails if it loads."""
    def errors(text: str, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
        path = write_config(text)
        with pytest.raises(ConfigError) as caught:
            load(path, env=env or {})
        return str(path), caught.value.errors
    return errors


def _find_error(errors: list[str], source: str, keypath: str, *fragments: str) -> str:
    """The one error line for `keypath`, checked to contain every fragment and
    to follow the `{file}: {keypath}: {problem} ({hint})` shape."""
    prefix = f"{source}: {keypath}: "
    lines = [line for line in errors if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one error for {keypath!r}, got {lines!r} in:\n" + "\n".join(errors)
    line = lines[0]
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert line.endswith(")") and " (" in line[len(prefix):], f"no (hint) in {line!r}"
    return line


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m fastgw ARGS` as a real process, from the repo root."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastgw", *args], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def find_error():
    return _find_error


@pytest.fixture
def run_cli():
    return _run_cli


@pytest.fixture
def minimal() -> str:
    return MINIMAL


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE
