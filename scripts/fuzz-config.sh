#!/usr/bin/env bash
# The config-loader fuzz tests (tests/config/test_config_fuzz.py) with many
# more examples than CI runs: only ConfigError may come out of a config check.
#
#   scripts/fuzz-config.sh            # 20,000 examples per generator (~40 min on 2 busy cores)
#   scripts/fuzz-config.sh 2000 -x    # fewer; any further pytest arguments
#
# Failures print a @reproduce_failure blob and are kept in .hypothesis/,
# so the next run (CI's too, on this machine) tries them first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXAMPLES="${1:-20000}"
shift || true
[ -x .venv/bin/python ] || { echo "run scripts/test.sh once first (it creates .venv)" >&2; exit 1; }
# No per-test timeout: a long run is meant to take long.
FASTGW_FUZZ_EXAMPLES="$EXAMPLES" exec .venv/bin/python -m pytest -q -p no:randomly -o timeout=0 \
    tests/config/test_config_fuzz.py "$@"
