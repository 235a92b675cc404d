#!/usr/bin/env bash
# S1 (wrk, GET / small response, 64 connections) through fastgw with a
# Redis-scoped rate limit that never triggers, against the same route
# without any limit, in the same run; prints both and the ratio.
#
# Starts: an upstream (nginx when installed, else bench/upstream.py), a
# redis-server on a free port (no persistence), and two gateways (1 worker
# each, `python3 -m fastgw` from this checkout unless FASTGW_CMD is set):
#   plain   one catch-all route, no limits
#   redis   the same route with rate_limits: [{key: client_ip, rate: 100000000/s,
#           burst: 100000000, scope: redis}]: every request runs the Lua script
#           in Redis (EVALSHA, pipelined), none is ever refused
# Each wrk run: WARM s warm-up, then DUR s measured; the order is plain,
# redis, repeated ROUNDS times (default 1); ratio = redis req/s / plain req/s
# (the sum of the rounds). Also printed: the gateway's CPU time per request
# (utime + stime of its processes over the measured run, from /proc), which
# a shared machine disturbs much less than req/s. With PIN=1 (default on >= 2 cores) upstream,
# redis-server and wrk run on core 0, the gateways on core 1.
#
# Usage: bench/redis_limit.sh            DUR=10 WARM=2 ROUNDS=1 PIN=1
# Needs: wrk, curl, python3, redis-server; nginx and taskset optional.
# Bounded: every wrk run is killed by `timeout` if it overruns by 30 s.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DUR="${DUR:-10}"; DUR="${DUR%s}"
WARM="${WARM:-2}"; WARM="${WARM%s}"
ROUNDS="${ROUNDS:-1}"
setup_pinning

require_tools wrk curl python3
REDIS_BIN="$(command -v redis-server || true)"
[ -n "$REDIS_BIN" ] || { [ -x /usr/sbin/redis-server ] && REDIS_BIN=/usr/sbin/redis-server; } || true
[ -n "$REDIS_BIN" ] || { echo "missing tool: redis-server" >&2; exit 1; }

UP_CPU=""; [ "$PIN" = 1 ] && UP_CPU=0
start_upstream "$UP_CPU"
log "upstream: $UPSTREAM_KIND on $UPSTREAM"

REDIS_PORT="$(free_port)"
start_bg redis "${LOAD_PIN[@]}" "$REDIS_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
REDIS_PID=$LAST_PID
wait_port "$REDIS_PORT" "$REDIS_PID" 10 || { echo "redis-server did not start" >&2; cat "$WORK/redis.log" >&2; exit 1; }
log "redis-server $("$REDIS_BIN" --version | awk '{print $3}') on 127.0.0.1:$REDIS_PORT"

resolve_fastgw_cmd "python3 -m fastgw"

# write_config NAME PORT LIMITS_YAML
write_config() {
    cat > "$WORK/$1.yaml" <<EOF
listeners: [{name: bench, address: "127.0.0.1:$2"}]
redis: {url: "redis://127.0.0.1:$REDIS_PORT", timeout: 50ms}
clusters: {main: {endpoints: ["http://$UPSTREAM"]}}
routes:
  - name: all
    match: {prefix: /}
    cluster: main
$3
EOF
}

cpu_ticks() {  # master pid -> utime+stime ticks of it and its children
    local pid=$1 kids
    kids="$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)"
    for p in $pid $kids; do cat /proc/"$p"/stat 2>/dev/null; done |
        awk '{ rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " "); t += f[12] + f[13] } END { print t + 0 }'
}

declare -A PORT_OF GW_PID
for name in plain redis; do
    PORT_OF[$name]="$(free_port)"
done
write_config plain "${PORT_OF[plain]}" ""
write_config redis "${PORT_OF[redis]}" \
    "    rate_limits: [{key: client_ip, rate: 100000000/s, burst: 100000000, scope: redis}]"
for name in plain redis; do
    start_bg "gw-$name" "${PROXY_PIN[@]}" bash -c "exec $FASTGW_CMD run --config $WORK/$name.yaml --workers 1"
    GW_PID[$name]=$LAST_PID
    wait_port "${PORT_OF[$name]}" "$LAST_PID" 20 || {
        echo "fastgw ($name) did not start; log:" >&2; cat "$WORK/gw-$name.log" >&2; exit 1; }
    PORT=${PORT_OF[$name]} r="$(verify_proxy "${PORT_OF[$name]}")"
    [ -z "$r" ] || { echo "fastgw ($name) check failed: $r" >&2; tail -20 "$WORK/gw-$name.log" >&2; exit 1; }
done
curl -s -D - -o /dev/null "http://127.0.0.1:${PORT_OF[redis]}/" | grep -qi '^RateLimit-Limit: 100000000' || {
    echo "the redis-limited gateway does not answer with RateLimit headers (Redis not consulted?)" >&2
    tail -20 "$WORK/gw-redis.log" >&2; exit 1; }

declare -A RPS P99 ERRS TICKS REQS CPU
HZ="$(getconf CLK_TCK)"
for name in plain redis; do RPS[$name]=0; ERRS[$name]=0; TICKS[$name]=0; REQS[$name]=0; done
for round in $(seq "$ROUNDS"); do
    for name in plain redis; do
        url="http://127.0.0.1:${PORT_OF[$name]}/"
        args=(-t1 -c64 --timeout 5s -s "$BENCH_DIR/wrk/report.lua")
        if [ "$WARM" != 0 ]; then
            timeout -k 5 $((WARM + 30)) "${LOAD_PIN[@]}" wrk "${args[@]}" -d"${WARM}s" "$url" > /dev/null 2>&1 || true
        fi
        t0="$(cpu_ticks "${GW_PID[$name]}")"
        timeout -k 5 $((DUR + 30)) "${LOAD_PIN[@]}" wrk "${args[@]}" -d"${DUR}s" --latency "$url" \
            > "$WORK/$name-$round.txt" 2>&1 || true
        t1="$(cpu_ticks "${GW_PID[$name]}")"
        out="$(parse_bench "$WORK/$name-$round.txt")" || true
        [ -n "$out" ] || { echo "wrk failed on $name:" >&2; cat "$WORK/$name-$round.txt" >&2; exit 1; }
        read -r rps p50 p99 _ st sock _ <<< "$out"
        log "round $round $name: $rps req/s, p50 $p50 ms, p99 $p99 ms, HTTP errors $st, socket errors $sock"
        RPS[$name]=$(( ${RPS[$name]} + rps )); P99[$name]="${P99[$name]:-}${P99[$name]:+ }$p99"
        TICKS[$name]=$(( ${TICKS[$name]} + t1 - t0 ))
        REQS[$name]=$(( ${REQS[$name]} + $(grep -m1 '^BENCH ' "$WORK/$name-$round.txt" | sed 's/.* requests=\([0-9]*\).*/\1/') ))
        ERRS[$name]=$(( ${ERRS[$name]} + st + sock ))
    done
done

# What Redis did: EVALSHA calls (one per request through the limited gateway).
evalsha="$(python3 - "$REDIS_PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
data = b""
while b"cmdstat_evalsha" not in data and not data.endswith(b"\r\n\r\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
for line in data.decode().splitlines():
    if line.startswith("cmdstat_evalsha:"):
        print(line.split("calls=")[1].split(",")[0])
        break
else:
    print(0)
EOF
)"
echo "## S1 with a Redis rate limit (never triggers) vs without limits — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- fastgw: \`$FASTGW_CMD\`, 1 worker each; upstream $UPSTREAM_KIND; redis-server on 127.0.0.1;" \
     "$(nproc) cores; pinning: $([ "$PIN" = 1 ] && echo "upstream + redis + wrk on core 0, gateways on core 1" || echo none)"
echo "- wrk -t1 -c64 GET /, ${DUR}s measured after ${WARM}s warm-up, $ROUNDS round(s); EVALSHA calls Redis served: $evalsha"
echo
echo "| gateway | req/s (sum of rounds / rounds) | p99 ms per round | gateway CPU µs per request | errors |"
echo "|---|---:|---|---:|---:|"
for name in plain redis; do
    cpu="$(awk -v t="${TICKS[$name]}" -v n="${REQS[$name]}" -v hz="$HZ" 'BEGIN { printf "%.1f", n ? t / hz / n * 1e6 : 0 }')"
    CPU[$name]=$cpu
    echo "| $name | $(( ${RPS[$name]} / ROUNDS )) | ${P99[$name]} | $cpu | ${ERRS[$name]} |"
done
echo
awk -v a="${RPS[redis]}" -v b="${RPS[plain]}" -v c="${CPU[redis]}" -v d="${CPU[plain]}" \
    'BEGIN { printf "ratio redis-limited / no limit: req/s %.2f, gateway CPU per request %.2f\n", a / b, c / d }'
