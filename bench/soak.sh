#!/usr/bin/env bash
# Memory soak of the features config (2 workers) under wrk; see bench/soak.py.
#   bench/soak.sh [--minutes 60] [--churn] [--csv FILE] [--tracemalloc PREFIX] ...
# Runs bench/soak.py with the checkout's .venv python when there is one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$HERE/../.venv/bin/python"
[ -x "$PY" ] || PY=python3
exec "$PY" "$HERE/soak.py" "$@"
