#!/usr/bin/env bash
# fastgw in the peer benchmark: runs ../shared/bench/peers.sh (nginx, haproxy,
# caddy, aiohttp, raw_proxy) with two extra proxies, each one worker on core 1:
#   fastgw           fastgw run --listen 127.0.0.1:$PORT --upstream http://$UPSTREAM --workers 1
#   fastgw-features  bench/run_features.sh $PORT $UPSTREAM  (bench/features.yaml:
#                    ~50 routes, header set/remove/add, forwarded headers,
#                    request ids; traffic hits the prefix route "/")
# and prints peers.sh's table (S1 small GET, S2 POST 1 KiB, S3 GET 1 MiB; S1
# as a ratio to nginx). Quote ratios from one run, not absolute figures.
#
# Usage (from anywhere):
#   bench/peers_fastgw.sh                                  # everything, ~5 min
#   ONLY="nginx raw fastgw fastgw-features" DUR=5s WARM=1s bench/peers_fastgw.sh
# Environment (forwarded to peers.sh): ONLY, DUR, WARM, plus anything else
# peers.sh reads (ANCHORS_RUN_DIR, default here ${TMPDIR:-/tmp}/anchors-run-fastgw;
# VENV). NETNS=auto|1|0: peers.sh uses fixed
# ports 19001-19030; with NETNS=1 (or auto, the default, when one of them is
# taken by another process) the run happens in a private network namespace
# (`unshare --net`, root only, loopback only) so it neither collides with nor
# is disturbed by other listeners on 127.0.0.1. FASTGW_CMD: how to start the gateway
# (default `fastgw` when on PATH, else `python3 -m fastgw` from this checkout;
# build it first: `python3 setup.py build_ext --inplace`).
# Needs: what peers.sh needs (nginx haproxy wrk curl taskset ss; caddy optional),
# and ../shared/bench/peers.sh beside this checkout (override: PEERS_SH).
#
# Process handling is peers.sh's: it starts each proxy as `bash -c "exec CMD"`
# under taskset, records the PID and kills it (TERM, then KILL after 5 s) when
# that proxy is done and on exit. Both fastgw commands exec the gateway's master,
# so that PID is the master; this wrapper starts nothing else itself.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PEERS_SH="${PEERS_SH:-$ROOT/../shared/bench/peers.sh}"
[ -x "$PEERS_SH" ] || [ -f "$PEERS_SH" ] || { echo "peers.sh not found at $PEERS_SH (set PEERS_SH)" >&2; exit 1; }

# shellcheck source=bench/fastgw_cmd.sh
. "$HERE/fastgw_cmd.sh"
export FASTGW_CMD   # read by run_features.sh
# A scratch dir of its own: peers.sh's default (/tmp/anchors-run) is shared by
# everyone running it on this machine, and a concurrent run rewrites its configs.
export ANCHORS_RUN_DIR="${ANCHORS_RUN_DIR:-${TMPDIR:-/tmp}/anchors-run-fastgw}"

# peers.sh substitutes $PORT and $UPSTREAM (literal dollars here).
# shellcheck disable=SC2016
EXTRA='fastgw|'"$FASTGW_CMD"' run --listen 127.0.0.1:$PORT --upstream http://$UPSTREAM --workers 1'
# shellcheck disable=SC2016
EXTRA+=';fastgw-features|'"$HERE"'/run_features.sh $PORT $UPSTREAM'

RUN_ENV=(env EXTRA_PROXIES="$EXTRA" ONLY="${ONLY:-}" DUR="${DUR:-10s}" WARM="${WARM:-2s}")

NETNS="${NETNS:-auto}"
if [ "$NETNS" = auto ]; then
    NETNS=0
    if ss -Hltn 2>/dev/null | awk '{print $4}' | grep -qE ':190([0-2][0-9]|30)$'; then
        echo "peers_fastgw: a port in 19001-19030 is taken by another process: running in a private network namespace" >&2
        NETNS=1
    fi
fi
if [ "$NETNS" = 1 ]; then
    command -v unshare >/dev/null 2>&1 || { echo "NETNS=1 needs unshare (util-linux)" >&2; exit 1; }
    # unshare execs (no fork): the PID stays this script's, peers.sh's traps do the cleanup.
    # shellcheck disable=SC2016
    exec unshare --net "${RUN_ENV[@]}" PEERS_SH="$PEERS_SH" bash -c \
        'ip link set lo up && exec bash "$PEERS_SH"'
fi
exec "${RUN_ENV[@]}" bash "$PEERS_SH"
