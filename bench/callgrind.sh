#!/usr/bin/env bash
# Instructions per proxied request in one fastgw worker, counted by callgrind:
# independent of machine load, so it compares code changes on a shared machine
# where req/s can't. Two runs (N1 and N2 requests) cancel start-up and shutdown:
#   per request = (I(N2) - I(N1)) / (N2 - N1)
#
# Usage: bench/callgrind.sh [N1=1000] [N2=4000]
#   UPSTREAM=127.0.0.1:PORT  an upstream answering GET / with 200 (default: one
#                            started here with bench/upstream.py)
#   FASTGW_ARGS               extra args for `fastgw run` (default: the one-line proxy)
#   REQUEST_PATH=/big         the path requested (default /)
#   BODY_BYTES=1024           POST a body of that many bytes instead of a GET
#                             (S2: REQUEST_PATH=/echo BODY_BYTES=1024)
#   CONFIG=FILE               run `fastgw run --config FILE` (its first listener is
#                             moved to a free port with FASTGW_LISTEN; its clusters
#                             must point at the upstream you pass in UPSTREAM)
#   PEER=raw                  measure ../shared/bench/raw_proxy.py instead, for a ratio
#   KEEP=DIR                  keep the callgrind files in DIR/N1 and DIR/N2 (for
#                             callgrind_annotate: the worker's is the one with most Ir)
#   PORT_WAIT=30              seconds to wait for the gateway to listen (valgrind's
#                             start-up takes longer on a busy machine)
# Needs: valgrind, python3 with fastgw importable.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${ROOT:-$(dirname "$HERE")}"
N1=${1:-1000}; N2=${2:-4000}
PY="$(python3 -c 'import sys; print(sys.executable)')"
WORK="$(mktemp -d /tmp/fastgw-callgrind.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Under valgrind on a busy machine the interpreter takes a while to listen: up to 3 min by default.
wait_port() { for _ in $(seq $((${PORT_WAIT:-180} * 10))); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

if [ -z "${UPSTREAM:-}" ]; then
    UP_PORT=$(free_port)
    python3 "$HERE/upstream.py" --port "$UP_PORT" > "$WORK/upstream.log" 2>&1 &
    PIDS+=($!)
    wait_port "$UP_PORT"
    UPSTREAM="127.0.0.1:$UP_PORT"
fi

instructions() {  # requests -> instructions of the worker process
    local n=$1 port; port=$(free_port)
    rm -f "$WORK"/callgrind.out.*
    local cmd=("$PY" -m fastgw run --listen "127.0.0.1:$port" --upstream "http://$UPSTREAM" --workers 1)
    # No admin listener: its fixed default port would clash between runs side by side.
    [ -n "${CONFIG:-}" ] && cmd=(env FASTGW_LISTEN="127.0.0.1:$port" FASTGW_ADMIN="${FASTGW_ADMIN:-off}" "$PY" -m fastgw run --config "$CONFIG" --workers 1)
    [ "${PEER:-}" = raw ] && cmd=("$PY" "$ROOT/../shared/bench/raw_proxy.py" --port "$port" --upstream "$UPSTREAM")
    (cd "$ROOT" && exec valgrind --tool=callgrind --trace-children=yes \
        --callgrind-out-file="$WORK/callgrind.out.%p" "${cmd[@]}" ${FASTGW_ARGS:-}) > "$WORK/gw.log" 2>&1 &
    local gw=$!
    wait_port "$port" || { cat "$WORK/gw.log" >&2; kill "$gw"; exit 1; }
    python3 "$HERE/fixed_requests.py" "$port" "$n" 8 "${REQUEST_PATH:-/}" "${BODY_BYTES:-0}"
    kill -TERM "$gw"; wait "$gw" || true
    [ -n "${KEEP:-}" ] && mkdir -p "$KEEP/$n" && cp "$WORK"/callgrind.out.* "$KEEP/$n/"
    # The worker is the busiest process that is not the master.
    local f; for f in "$WORK"/callgrind.out.*; do
        [ "$f" = "$WORK/callgrind.out.$gw" ] && [ "${PEER:-}" != raw ] && continue
        awk '/^summary:|^totals:/ {print $2; exit}' "$f"
    done | sort -n | tail -1
}

i1=$(instructions "$N1"); i2=$(instructions "$N2")
echo "worker instructions: $N1 requests: $i1; $N2 requests: $i2"
awk -v a="$i1" -v b="$i2" -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "instructions per request: %.0f\n", (b - a) / (n2 - n1) }'
