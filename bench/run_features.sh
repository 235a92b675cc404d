#!/usr/bin/env bash
# Start fastgw on the benchmark "features" config (bench/features.yaml): one
# worker with ~50 routes, header rewrite, forwarded headers and request ids.
#
# Usage: bench/run_features.sh PORT UPSTREAM [extra fastgw args...]
#   PORT       port to listen on (127.0.0.1)
#   UPSTREAM   host:port of the load target (all clusters point at it)
# Environment:
#   FASTGW_CMD   how to start the gateway; default: `fastgw` when it is on PATH,
#                else `python3 -m fastgw` (with this checkout on PYTHONPATH)
#   FASTGW_WORKERS  worker count passed as --workers (default 1)
#   FEATURES_CONF   where to write the rendered config; default
#                   ${TMPDIR:-/tmp}/fastgw-features-PORT.yaml (one file per port,
#                   overwritten on each start: peers.sh's fixed ports leave no
#                   litter; scripts on random ports pass a file in their scratch dir)
#
# The template is rendered into FEATURES_CONF,
# then this script `exec`s fastgw: the PID the caller recorded is the gateway's
# master itself, so ../shared/bench/peers.sh and the other bench scripts stop
# it (and it its workers) with a plain kill of that PID.
# Needs: bash, sed, fastgw (or its checkout with the extensions built).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 PORT UPSTREAM(host:port) [fastgw args...]" >&2; exit 2; }
PORT=$1; UPSTREAM=$2; shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

case "$PORT" in ''|*[!0-9]*) echo "bad PORT: $PORT" >&2; exit 2;; esac
case "$UPSTREAM" in *:*) ;; *) echo "UPSTREAM must be host:port, got: $UPSTREAM" >&2; exit 2;; esac
UPSTREAM="${UPSTREAM#http://}"

# shellcheck source=bench/fastgw_cmd.sh
. "$HERE/fastgw_cmd.sh"

CONF="${FEATURES_CONF:-${TMPDIR:-/tmp}/fastgw-features-$PORT.yaml}"
sed -e "s|@LISTEN@|127.0.0.1:$PORT|g" -e "s|@UPSTREAM@|$UPSTREAM|g" \
    "$HERE/features.yaml" > "$CONF.tmp"
mv -f "$CONF.tmp" "$CONF"

# shellcheck disable=SC2086  # FASTGW_CMD may hold several words (python3 -m fastgw)
# No admin listener unless asked for (FASTGW_ADMIN=host:port): its default port
# would clash between gateways run side by side.
export FASTGW_ADMIN="${FASTGW_ADMIN:-off}"
exec $FASTGW_CMD run --config "$CONF" --workers "${FASTGW_WORKERS:-1}" "$@"
