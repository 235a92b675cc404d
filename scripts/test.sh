#!/usr/bin/env bash
# Install what the test suite needs and run it, from a fresh clone.
#
#   scripts/test.sh                  # the whole suite
#   scripts/test.sh tests/integration -k websocket    # any pytest arguments
#
# On Debian/Ubuntu (as root, or with sudo) it installs missing system
# packages: curl, redis-server (the Redis rate-limit tests start a real one),
# prometheus (for promtool, which checks the shipped alert rules),
# a C toolchain and Python headers (the Cython extensions are compiled at
# install time), and python3-venv. It then creates .venv in the
# repository if absent, installs fastgw editable with its test extras into
# it, and runs pytest from the repository root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"

missing=()
command -v "$PYTHON" >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/sbin/redis-server ] || [ -x /usr/bin/redis-server ] \
    || missing+=(redis-server)
command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
# promtool checks packaging/prometheus/fastgw-alerts.yaml (Debian ships it in prometheus).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if command -v "$PYTHON" >/dev/null 2>&1; then
    # venv with ensurepip (Debian splits it into python3-venv).
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    # Python.h, to compile fastgw/_native.
    "$PYTHON" - <<'EOF' || missing+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
else
    missing+=(python3-venv python3-dev)
fi

if ((${#missing[@]})); then
    echo "scripts/test.sh: installing system packages: ${missing[*]}" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: apt-get not found; install these yourself: ${missing[*]}" >&2
        exit 1
    fi
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "scripts/test.sh: not root and no sudo; install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "scripts/test.sh: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi

# Editable installs of pyproject projects need a recent pip (PEP 660).
if ! .venv/bin/python -c 'import sys, pip; sys.exit(int(pip.__version__.split(".")[0]) < 23)'; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

exec .venv/bin/python -m pytest -q "$@"
