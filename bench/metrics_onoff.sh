#!/usr/bin/env bash
# S1 (small GET, 64 connections, wrk -t1) through one fastgw worker with
# metrics off and on, alternating in one run so both see the same machine:
# off, on, off, on, ... (ROUNDS pairs). Prints req/s of each run and the
# on/off ratio of the summed req/s. Trace propagation is off in both (it is
# its own feature); the access log is off.
#
# Usage: bench/metrics_onoff.sh   (DUR=10 WARM=2 ROUNDS=3; PIN=1 puts the
#   gateway on core 1, upstream + wrk on core 0, as peers.sh does)
# Needs: wrk, python3 with this checkout built; nginx optional (upstream).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR="${DUR:-10}"; WARM="${WARM:-2}"; ROUNDS="${ROUNDS:-3}"
setup_pinning
start_upstream "$([ "$PIN" = 1 ] && echo 0)"
log "upstream: $UPSTREAM_KIND on $UPSTREAM"

run_one() {  # on|off -> req/s
    local mode=$1 port cfg pid rps
    port="$(free_port)"
    cfg="$WORK/gw-$mode.yaml"
    cat > "$cfg" <<CFG
listeners: [{address: "127.0.0.1:$port"}]
server: {workers: 1}
clusters: {main: {endpoints: ["http://$UPSTREAM"]}}
routes: [{match: {prefix: /}, cluster: main}]
metrics: {enabled: $([ "$mode" = on ] && echo true || echo false)}
tracing: {propagate: false}
CFG
    (cd "$ROOT" && PYTHONPATH="$ROOT" exec "${PROXY_PIN[@]}" python3 -m fastgw run --config "$cfg") \
        > "$WORK/gw-$mode.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" 15 || { cat "$WORK/gw-$mode.log" >&2; return 1; }
    timeout $((WARM + 30)) "${LOAD_PIN[@]}" wrk -t1 -c64 -d"${WARM}s" "http://127.0.0.1:$port/" > /dev/null
    rps="$(timeout $((DUR + 30)) "${LOAD_PIN[@]}" wrk -t1 -c64 -d"${DUR}s" "http://127.0.0.1:$port/" \
           | awk '/^Requests\/sec/ {print $2}')"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rps"
}

off_total=0; on_total=0
for round in $(seq "$ROUNDS"); do
    off="$(run_one off)"; on="$(run_one on)"
    echo "round $round: metrics off $off req/s, on $on req/s"
    off_total="$(awk -v a="$off_total" -v b="$off" 'BEGIN {print a + b}')"
    on_total="$(awk -v a="$on_total" -v b="$on" 'BEGIN {print a + b}')"
done
awk -v on="$on_total" -v off="$off_total" -v n="$ROUNDS" \
    'BEGIN { printf "mean off %.0f req/s, mean on %.0f req/s, on/off %.3f\n", off / n, on / n, on / off }'
