#!/usr/bin/env bash
# Do requests spread over fastgw's workers? Starts an upstream (nginx on a free
# port when installed, else bench/upstream.py; or $UPSTREAM), starts fastgw
# with --workers 2 (WORKERS to change), finds the workers (the master's
# children, /proc/<master>/task/<master>/children), reads each worker's CPU
# time (utime + stime, /proc/<pid>/stat) before and after a bounded wrk run
# with 64 connections on GET /, and prints each worker's share of the CPU the
# workers used. Halfway through the run it also counts, per worker, the
# client connections it holds (ss -tnp), which shows how accept() spread them.
# Both workers doing substantial work (each at least MIN_SHARE % of the
# total, default 20) means the load is spread.
#
# Usage: bench/multiworker.sh            DUR=10 WORKERS=2 MIN_SHARE=20
#        FEATURES=1 bench/multiworker.sh # on bench/features.yaml
# Environment: FASTGW_CMD (default `python3 -m fastgw`, this checkout on
#   PYTHONPATH when fastgw is not installed), UPSTREAM (host:port to reuse),
#   DUR (seconds, default 10), CONNS (64), KEEP_WORK=1 keeps logs.
# Exit: 0 spread, 1 not spread (or a worker died), 2 could not run.
# Needs: wrk, curl, python3, Linux /proc; nginx and ss optional.
# Every process started is recorded and stopped on exit (bench/lib.sh).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR="${DUR:-10}"; DUR="${DUR%s}"
CONNS="${CONNS:-64}"
WORKERS="${WORKERS:-2}"
MIN_SHARE="${MIN_SHARE:-20}"
HZ="$(getconf CLK_TCK)"
for t in wrk curl python3; do command -v "$t" >/dev/null 2>&1 || { echo "missing tool: $t" >&2; exit 2; }; done

start_upstream "" || exit 2
log "upstream: $UPSTREAM_KIND on $UPSTREAM"
resolve_fastgw_cmd "python3 -m fastgw"
PORT="$(free_port)"
if [ -n "${FEATURES:-}" ] && [ "$FEATURES" != 0 ]; then
    FEATURES_CONF="$WORK/features.yaml" FASTGW_WORKERS="$WORKERS" \
        start_bg fastgw "$BENCH_DIR/run_features.sh" "$PORT" "$UPSTREAM"
    label="bench/features.yaml"
else
    # shellcheck disable=SC2086  # FASTGW_CMD may be several words
    start_bg fastgw $FASTGW_CMD run --listen "127.0.0.1:$PORT" --upstream "http://$UPSTREAM" --workers "$WORKERS"
    label="--upstream"
fi
MASTER=$LAST_PID
log "fastgw ($label) --workers $WORKERS on :$PORT, master pid $MASTER"
wait_port "$PORT" "$MASTER" 20 || { echo "fastgw did not start; log:" >&2; tail -30 "$WORK/fastgw.log" >&2; exit 2; }

children() { cat "/proc/$MASTER/task/$MASTER/children" 2>/dev/null || true; }
WPIDS=()
for _ in $(seq 100); do
    read -r -a WPIDS <<< "$(children)"
    [ "${#WPIDS[@]}" -ge "$WORKERS" ] && break
    sleep 0.1
done
[ "${#WPIDS[@]}" -ge 1 ] || { echo "master $MASTER has no worker children" >&2; exit 2; }
[ "${#WPIDS[@]}" = "$WORKERS" ] || log "note: master has ${#WPIDS[@]} children (${WPIDS[*]}), asked for $WORKERS"
r="$(verify_proxy "$PORT")"
[ -z "$r" ] || { echo "proxy check failed: $r" >&2; tail -20 "$WORK/fastgw.log" >&2; exit 1; }

ticks() {  # pid -> utime+stime in clock ticks (fields 14 and 15, after the "(comm)")
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo -1
}
declare -A T0 T1 CONN
for w in "${WPIDS[@]}"; do T0[$w]="$(ticks "$w")"; CONN[$w]="-"; done

log "wrk -t2 -c$CONNS -d${DUR}s on GET /"
timeout -k 5 $((DUR + 30)) wrk -t2 -c"$CONNS" -d"${DUR}s" --timeout 5s --latency \
    -s "$BENCH_DIR/wrk/report.lua" "http://127.0.0.1:$PORT/" > "$WORK/wrk.txt" 2>&1 &
WRK_PID=$!; PIDS+=("$WRK_PID")
sleep "$(awk -v d="$DUR" 'BEGIN{print d/2}')"
if command -v ss >/dev/null 2>&1; then
    ss -Htnp state established "sport = :$PORT" > "$WORK/ss.txt" 2>/dev/null || true
    for w in "${WPIDS[@]}"; do CONN[$w]="$(grep -c "pid=$w," "$WORK/ss.txt" || true)"; done
fi
wait "$WRK_PID" || true
for w in "${WPIDS[@]}"; do T1[$w]="$(ticks "$w")"; done

out="$(parse_bench "$WORK/wrk.txt")" || true
[ -n "$out" ] || { echo "wrk printed no result:" >&2; cat "$WORK/wrk.txt" >&2; exit 2; }
read -r rps p50 p99 _ st sock _ <<< "$out"

total=0; dead=0
for w in "${WPIDS[@]}"; do
    if [ "${T1[$w]}" -lt 0 ]; then dead=1; continue; fi
    total=$((total + T1[$w] - T0[$w]))
done
spread=1
{
echo "## fastgw --workers $WORKERS ($label): per-worker CPU under wrk -t2 -c$CONNS -d${DUR}s — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- $(nproc) cores; upstream $UPSTREAM_KIND; total $rps req/s, p50 $p50 ms, p99 $p99 ms, HTTP errors (≥400) $st, socket errors $sock"
echo
echo "| worker pid | CPU s (utime+stime) | share of workers' CPU | client conns held mid-run |"
echo "|---:|---:|---:|---:|"
for w in "${WPIDS[@]}"; do
    if [ "${T1[$w]}" -lt 0 ]; then echo "| $w | died | | |"; spread=0; continue; fi
    d=$((T1[$w] - T0[$w]))
    share="$(awk -v d="$d" -v t="$total" 'BEGIN{ if (t > 0) printf "%.1f", 100 * d / t; else print "0" }')"
    awk -v s="$share" -v m="$MIN_SHARE" 'BEGIN{ exit !(s + 0 < m + 0) }' && spread=0
    echo "| $w | $(awk -v d="$d" -v hz="$HZ" 'BEGIN{printf "%.2f", d / hz}') | $share % | ${CONN[$w]} |"
done
echo
if [ "$dead" = 0 ] && [ "$spread" = 1 ] && [ "$total" -gt 0 ]; then
    echo "spread: yes (every worker >= $MIN_SHARE % of the workers' CPU)"
else
    echo "spread: NO (a worker below $MIN_SHARE % of the workers' CPU, or died)"
fi
}
[ "$dead" = 0 ] && [ "$spread" = 1 ] && [ "$total" -gt 0 ]
