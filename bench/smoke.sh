#!/usr/bin/env bash
# CI benchmark smoke: does the real `fastgw` binary serve load on the benchmark
# features config (bench/features.yaml, one worker) without a single error?
#
# Starts an upstream (nginx on a free port when installed, else
# bench/upstream.py), starts the gateway via bench/run_features.sh with
# --workers 1, checks GET / , GET /big and POST /echo through it, then runs
# wrk for 3 s with 32 connections on GET / (bench/wrk/count2xx.lua counts every
# non-2xx answer; without wrk, bench/pyload.py does the same bounded loop) and
# prints req/s and p99. The rate is information only, never a pass/fail gate
# (CI machines vary): the exit status is
#   0  the run completed with no non-2xx answer and no socket error
#   1  any non-2xx answer or socket error, or the gateway died
#   2  it could not run (tool missing, upstream or gateway did not start)
#   124  the whole script overran its 58 s watchdog
# Everything started is recorded by PID and stopped on exit (see bench/lib.sh).
#
# Usage: bench/smoke.sh
# Environment: FASTGW_BIN — the gateway command (default: `fastgw` from PATH;
#   may hold words, e.g. FASTGW_BIN="python3 -m fastgw" in a source checkout
#   with built extensions), SMOKE_DUR (seconds, default 3), SMOKE_CONNS (32);
#   NO_NGINX=1 / NO_WRK=1 force the fallbacks (to test them).
# Needs: bash, curl, python3; wrk, nginx, taskset optional. Without nginx or
#   wrk, a Python with uvloop + httptools (BENCH_PYTHON, else the venv python
#   beside FASTGW_BIN, else python3) runs bench/upstream.py / bench/pyload.py.
set -euo pipefail

# Watchdog: the whole smoke, cleanup included, gets 58 s.
if [ -z "${FASTGW_SMOKE_INNER:-}" ]; then
    export FASTGW_SMOKE_INNER=1
    exec timeout -k 2 58 bash "$0" "$@"
fi

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR="${SMOKE_DUR:-3}"
CONNS="${SMOKE_CONNS:-32}"
fail_run() { echo "smoke: could not run: $*" >&2; exit 2; }

for t in curl python3; do command -v "$t" >/dev/null 2>&1 || fail_run "missing tool $t"; done
if [ -n "${FASTGW_BIN:-}" ]; then
    FASTGW_CMD="$FASTGW_BIN"
else
    FASTGW_CMD="$(command -v fastgw)" || fail_run "no fastgw on PATH (pip install . or set FASTGW_BIN)"
fi
resolve_fastgw_cmd "$FASTGW_CMD"   # exports FASTGW_CMD for run_features.sh

start_upstream "" || fail_run "upstream did not start"
log "upstream: $UPSTREAM_KIND on $UPSTREAM"

PORT="$(free_port)"
FEATURES_CONF="$WORK/features.yaml" start_bg fastgw "$BENCH_DIR/run_features.sh" "$PORT" "$UPSTREAM"
GW_PID=$LAST_PID
log "fastgw: $FASTGW_CMD on bench/features.yaml, 1 worker, port $PORT (pid $GW_PID)"
wait_port "$PORT" "$GW_PID" 15 || {
    echo "--- fastgw log" >&2; tail -30 "$WORK/fastgw.log" >&2; fail_run "fastgw did not listen on :$PORT within 15 s"; }
r="$(verify_proxy "$PORT")"
if [ -n "$r" ]; then
    echo "smoke: FAIL: $r" >&2; tail -30 "$WORK/fastgw.log" >&2; exit 1
fi

if command -v wrk >/dev/null 2>&1 && [ -z "${NO_WRK:-}" ]; then
    tool="wrk -t1 -c$CONNS -d${DUR}s"
    timeout -k 2 $((DUR + 15)) wrk -t1 -c"$CONNS" -d"${DUR}s" --timeout 5s --latency \
        -s "$BENCH_DIR/wrk/count2xx.lua" "http://127.0.0.1:$PORT/" > "$WORK/load.txt" 2>&1 || true
else
    tool="bench/pyload.py -c $CONNS -d $DUR (wrk not installed)"
    bench_python || fail_run "no Python with uvloop/httptools for bench/pyload.py"
    timeout -k 2 $((DUR + 15)) "$BENCH_PY" "$BENCH_DIR/pyload.py" -c "$CONNS" -d "$DUR" \
        "http://127.0.0.1:$PORT/" > "$WORK/load.txt" 2>&1 || true
fi
out="$(parse_bench "$WORK/load.txt")" || true
if [ -z "$out" ]; then
    cat "$WORK/load.txt" >&2; fail_run "the load tool printed no result"
fi
read -r rps _ p99 _ _ sock non2xx <<< "$out"
alive=yes; kill -0 "$GW_PID" 2>/dev/null || alive=no

echo "smoke: $tool via fastgw (bench/features.yaml, 1 worker), upstream $UPSTREAM_KIND:" \
     "$rps req/s, p99 $p99 ms, non-2xx $non2xx, socket errors $sock, gateway alive $alive"
if [ "$non2xx" != 0 ] || [ "$sock" != 0 ] || [ "$alive" != yes ]; then
    echo "smoke: FAIL" >&2; tail -30 "$WORK/fastgw.log" >&2; exit 1
fi
echo "smoke: OK"
