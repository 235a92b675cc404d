#!/usr/bin/env bash
# wrk scenarios against one fastgw: starts an upstream (nginx on a free port
# with a generated config like peers.sh's, else bench/upstream.py; or reuses
# $UPSTREAM), starts the gateway, runs four bounded wrk scenarios and prints a
# markdown table:
#   S1  GET /       small response,  64 connections
#   S2  POST /echo  1 KiB body,      64 connections
#   S3  GET /big    1 MiB response,  16 connections
#   S4  GET /       small response,  1000 connections
# Each scenario: WARM warm-up, then DUR measured (wrk -t1 --latency --timeout 5s),
# each wrk run additionally killed by `timeout` if it overruns by 30 s.
# "other procs CPU %" is the share of all cores that processes outside this
# script used during the measured run (a shared machine disturbs figures).
# With PIN=1 (default on >= 2 cores) upstream + wrk run on core 0 and the
# gateway on core 1, as in ../shared/bench/peers.sh.
#
# Usage:
#   bench/wrk_scenarios.sh                       # fastgw --upstream, 1 worker
#   FEATURES=1 bench/wrk_scenarios.sh            # fastgw on bench/features.yaml
#   DUR=5 WARM=1 ONLY="S1 S4" bench/wrk_scenarios.sh
#   PROXY_CMD='python3 ../shared/bench/raw_proxy.py --port $PORT --upstream $UPSTREAM' \
#       bench/wrk_scenarios.sh                   # any other proxy ($PORT/$UPSTREAM substituted)
# Environment: FASTGW_CMD (default `python3 -m fastgw`, this checkout on
#   PYTHONPATH if fastgw is not installed), WORKERS (default 1), FEATURES,
#   PROXY_CMD, UPSTREAM (host:port to reuse), DUR/WARM (seconds, default 10/2),
#   ONLY (subset of S1..S4), PIN (1/0), KEEP_WORK=1 keeps the scratch dir (wrk logs).
# Needs: wrk, curl, python3 (+ uvloop/httptools for the fallback upstream);
#   nginx and taskset optional.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR="${DUR:-10}"; DUR="${DUR%s}"
WARM="${WARM:-2}"; WARM="${WARM%s}"
ONLY="${ONLY:-S1 S2 S3 S4}"
WORKERS="${WORKERS:-1}"
setup_pinning

require_tools wrk curl python3

UP_CPU=""; [ "$PIN" = 1 ] && UP_CPU=0
start_upstream "$UP_CPU"
log "upstream: $UPSTREAM_KIND on $UPSTREAM"

PORT="$(free_port)"
if [ -n "${PROXY_CMD:-}" ]; then
    cmd="$PROXY_CMD"; label="PROXY_CMD"
elif [ -n "${FEATURES:-}" ] && [ "$FEATURES" != 0 ]; then
    resolve_fastgw_cmd "python3 -m fastgw"
    cmd="env FEATURES_CONF=$WORK/features.yaml FASTGW_WORKERS=$WORKERS $BENCH_DIR/run_features.sh \$PORT \$UPSTREAM"; label="fastgw, bench/features.yaml"
else
    resolve_fastgw_cmd "python3 -m fastgw"
    cmd="$FASTGW_CMD run --listen 127.0.0.1:\$PORT --upstream http://\$UPSTREAM --workers $WORKERS"
    label="fastgw --upstream"
fi
cmd="${cmd//\$PORT/$PORT}"; cmd="${cmd//\$UPSTREAM/$UPSTREAM}"
log "proxy: $cmd"
start_bg proxy "${PROXY_PIN[@]}" bash -c "exec $cmd"
PROXY_PID=$LAST_PID
wait_port "$PORT" "$PROXY_PID" 20 || { echo "proxy did not start; log:" >&2; cat "$WORK/proxy.log" >&2; exit 1; }
r="$(verify_proxy "$PORT")"
[ -z "$r" ] || { echo "proxy check failed: $r; log:" >&2; tail -20 "$WORK/proxy.log" >&2; exit 1; }

# run_wrk SCEN CONNS PATH SCRIPT -> parse_bench fields, "" when wrk failed
run_wrk() {
    local scen=$1 conns=$2 path=$3 script=$4 url="http://127.0.0.1:$PORT$3"
    local args=(-t1 -c"$conns" --timeout 5s -s "$BENCH_DIR/wrk/$script")
    if [ "$WARM" != 0 ]; then
        timeout -k 5 $((WARM + 30)) "${LOAD_PIN[@]}" wrk "${args[@]}" -d"${WARM}s" "$url" \
            > "$WORK/$scen-warm.txt" 2>&1 || true
    fi
    local s0 s1 t0=$EPOCHREALTIME
    s0="$(proc_snapshot)"
    timeout -k 5 $((DUR + 30)) "${LOAD_PIN[@]}" wrk "${args[@]}" -d"${DUR}s" --latency "$url" \
        > "$WORK/$scen.txt" 2>&1 || true
    s1="$(proc_snapshot)"
    OTHER[$scen]="$(other_cpu_pct "$s0" "$s1" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b - a}')")"
    parse_bench "$WORK/$scen.txt" || true
}

declare -A ROW OTHER
for scen in S1 S2 S3 S4; do
    [[ " $ONLY " == *" $scen "* ]] || continue
    case $scen in
        S1) desc="GET / (12 B)";      conns=64;   path=/;     script=report.lua ;;
        S2) desc="POST /echo 1 KiB";  conns=64;   path=/echo; script=post1k.lua ;;
        S3) desc="GET /big (1 MiB)";  conns=16;   path=/big;  script=report.lua ;;
        S4) desc="GET / (12 B)";      conns=1000; path=/;     script=report.lua ;;
    esac
    log "$scen: $desc, $conns connections, ${DUR}s"
    kill -0 "$PROXY_PID" 2>/dev/null || { ROW[$scen]="| $scen | $desc | $conns | proxy exited | | | | | | |"; continue; }
    run_wrk "$scen" "$conns" "$path" "$script" > "$WORK/$scen.row"   # not $(...): OTHER must survive
    out="$(cat "$WORK/$scen.row")"
    if [ -z "$out" ]; then
        ROW[$scen]="| $scen | $desc | $conns | wrk failed: $(tail -1 "$WORK/$scen.txt") | | | | | | |"
        continue
    fi
    read -r rps p50 p99 mibs st sock _ <<< "$out"
    ROW[$scen]="| $scen | $desc | $conns | $rps | $p50 | $p99 | $mibs | $st | $sock | ${OTHER[$scen]} |"
    log "$scen: $out"
done

{
echo "## wrk scenarios: $label — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- proxy: \`$cmd\`"
echo "- upstream: $UPSTREAM_KIND; $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "- pinning: $([ "$PIN" = 1 ] && echo "upstream + wrk on core 0, proxy on core 1" || echo none); wrk -t1, ${DUR}s measured after ${WARM}s warm-up"
echo
echo "| scen | request | conns | req/s | p50 ms | p99 ms | MiB/s | HTTP errors (≥400) | socket errors | other procs CPU % |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for scen in S1 S2 S3 S4; do if [ -n "${ROW[$scen]:-}" ]; then echo "${ROW[$scen]}"; fi; done
}
kill -0 "$PROXY_PID" 2>/dev/null || { echo "proxy exited during the run; log tail:" >&2; tail -20 "$WORK/proxy.log" >&2; exit 1; }
