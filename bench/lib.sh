# Shared helpers for the bench/*.sh scripts; source it, don't run it.
#
# Provides: log, a scratch dir ($WORK, removed on exit), process bookkeeping
# (start_bg records every PID in PIDS; an EXIT trap stops them all, newest
# first, TERM then KILL after 5 s), free_port, wait_port, start_upstream
# (nginx when installed, else bench/upstream.py) and resolve_fastgw_cmd.
# Needs: bash >= 4.4, python3; nginx optional; ss (iproute2) optional.
# The caller sets `set -euo pipefail` before sourcing.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastgw-bench.XXXXXX")"
chmod 755 "$WORK"   # nginx workers run as nobody and must read $WORK/www

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

stop_pid() {  # pid: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 5 s: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    return 0
}

bench_cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
    if [ -n "${KEEP_WORK:-}" ]; then log "scratch kept: $WORK"; else rm -rf "$WORK"; fi
    return $rc
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD...: run CMD in the background, output to $WORK/NAME.log;
# the PID goes to PIDS and LAST_PID.
start_bg() {
    local name=$1; shift
    "$@" > "$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_listening() {  # port
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$1" | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

wait_port() {  # port pid [seconds, default 10]: 0 once listening, 1 if pid died or timeout
    local i n=$(( ${3:-10} * 10 ))
    for ((i = 0; i < n; i++)); do
        port_listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_upstream [cpu]: sets UPSTREAM=127.0.0.1:PORT and UPSTREAM_KIND.
# Reuses $UPSTREAM when the caller exported one (nothing started then).
# Resources: GET / "hello world\n", GET /big 1 MiB, POST /echo "ok\n".
start_upstream() {
    local cpu=${1:-} pin=() port
    [ -n "$cpu" ] && command -v taskset >/dev/null 2>&1 && pin=(taskset -c "$cpu")
    if [ -n "${UPSTREAM:-}" ]; then
        UPSTREAM="${UPSTREAM#http://}"; UPSTREAM_KIND="external"
        return 0
    fi
    port="$(free_port)"
    if command -v nginx >/dev/null 2>&1 && [ -z "${NO_NGINX:-}" ]; then
        mkdir -p "$WORK/nginx" "$WORK/www"
        head -c 1048576 /dev/urandom > "$WORK/www/big"
        chmod 644 "$WORK/www/big"
        cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $WORK/www;
        location / { default_type text/plain; return 200 "hello world\n"; }
        location = /big { default_type application/octet-stream; }
        location /echo { client_body_buffer_size 64k; client_max_body_size 1m;
                         default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
        start_bg upstream "${pin[@]}" nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
        UPSTREAM_KIND="nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    else
        bench_python || return 1
        start_bg upstream "${pin[@]}" "$BENCH_PY" "$BENCH_DIR/upstream.py" --port "$port"
        UPSTREAM_KIND="bench/upstream.py"
    fi
    wait_port "$port" "$LAST_PID" 10 || {
        echo "upstream ($UPSTREAM_KIND) did not start; log:" >&2; cat "$WORK/upstream.log" >&2; return 1; }
    UPSTREAM="127.0.0.1:$port"
}

# bench_python: sets BENCH_PY to a Python that imports uvloop and httptools
# (for bench/upstream.py and bench/pyload.py): $BENCH_PYTHON, else the venv
# python beside $FASTGW_BIN / FASTGW_CMD's first word, else python3.
bench_python() {
    local c first="${FASTGW_BIN:-${FASTGW_CMD:-}}"
    first="${first%% *}"
    for c in "${BENCH_PYTHON:-}" "${first:+$(dirname "$first")/python3}" python3; do
        [ -n "$c" ] || continue
        if "$c" -c 'import uvloop, httptools' >/dev/null 2>&1; then BENCH_PY="$c"; return 0; fi
    done
    echo "no python with uvloop and httptools (set BENCH_PYTHON)" >&2
    return 1
}

# resolve_fastgw_cmd DEFAULT: sets FASTGW_CMD (env wins, else DEFAULT). When it
# runs `python* -m fastgw` and fastgw is not importable as installed, this
# checkout goes on PYTHONPATH (needs `python3 setup.py build_ext --inplace`).
resolve_fastgw_cmd() {
    FASTGW_CMD="${FASTGW_CMD:-$1}"
    case "$FASTGW_CMD" in
        python*" -m fastgw"*)
            if ! (cd / && ${FASTGW_CMD%% *} -c 'import fastgw.cli') >/dev/null 2>&1; then
                export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
            fi ;;
    esac
    export FASTGW_CMD
}

# verify_proxy PORT: "" when GET /, GET /big (checksum against the upstream),
# POST /echo answer through the proxy as they do directly; else the reason.
verify_proxy() {
    local base="http://127.0.0.1:$1" got want
    got="$(curl -s -m 5 "$base/")" || { echo "GET / failed"; return; }
    [ "$got" = "hello world" ] || { echo "GET / body mismatch: ${got:0:200}"; return; }
    want="$(curl -s -m 10 "http://$UPSTREAM/big" | sha256sum | cut -d' ' -f1)"
    got="$(curl -s -m 10 "$base/big" | sha256sum | cut -d' ' -f1)"
    [ "$got" = "$want" ] || { echo "GET /big checksum mismatch"; return; }
    got="$(head -c 1024 /dev/zero | tr '\0' a | curl -s -m 5 -X POST -H 'Content-Type: application/octet-stream' --data-binary @- "$base/echo")" ||
        { echo "POST /echo failed"; return; }
    [ "$got" = "ok" ] || { echo "POST /echo body mismatch: ${got:0:200}"; return; }
}

# parse_bench FILE: the BENCH line of a wrk run as
# "rps p50_ms p99_ms MiB/s status_err sock_err non2xx" (non2xx "-" unless counted)
parse_bench() {
    grep -m1 '^BENCH ' "$1" | awk '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        s = v["duration_us"] / 1e6; if (s <= 0) s = 1
        printf "%.0f %.2f %.2f %.1f %d %d %s\n", v["requests"] / s, v["p50_us"] / 1000, v["p99_us"] / 1000,
            v["bytes"] / s / 1048576, v["status_err"], v["connect"] + v["read"] + v["write"] + v["timeout"],
            ("non2xx" in v) ? v["non2xx"] : "-" }'
}

# CPU used by processes outside this script's process tree (other people's
# work on a shared machine), to judge whether a figure was disturbed.
# proc_snapshot -> "pid ppid ticks" lines for every process (utime + stime).
proc_snapshot() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{ pid = $1; rest = $0; sub(/^.*\) /, "", rest)
        split(rest, f, " "); print pid, f[2], f[12] + f[13] }'
}
# other_cpu_pct SNAP0 SNAP1 SECONDS -> % of all cores used meanwhile by
# processes that are not descendants of this shell (kernel threads excluded).
other_cpu_pct() {
    awk -v me=$$ -v secs="$3" -v ncpu="$(nproc)" -v hz="$(getconf CLK_TCK)" '
        FNR == NR { before[$1] = $3; next }
        { parent[$1] = $2; now[$1] = $3 }
        END {
            for (p in now) {
                if (p == 2 || parent[p] == 2) continue
                q = p; ours = 0
                for (i = 0; i < 64 && q > 1; i++) { if (q == me) { ours = 1; break }; q = parent[q] }
                if (!ours) used += now[p] - ((p in before) ? before[p] : 0)
            }
            if (secs <= 0) print "-"; else printf "%.0f", 100 * used / hz / secs / ncpu
        }' <(echo "$1") <(echo "$2")
}

# Pin load generators to core 0 and the proxy under test to core 1 when there
# are two cores and taskset (PIN=0/1 overrides): sets LOAD_PIN and PROXY_PIN.
setup_pinning() {
    if [ -z "${PIN:-}" ]; then
        PIN=0; [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1 && PIN=1
    fi
    LOAD_PIN=(); PROXY_PIN=()
    if [ "$PIN" = 1 ]; then LOAD_PIN=(taskset -c 0); PROXY_PIN=(taskset -c 1); fi
}

require_tools() {  # tool...: exit 1 naming the first one missing
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || { echo "missing tool: $t" >&2; exit 1; }
    done
}
