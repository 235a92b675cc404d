# cython: language_level=3
"""Outcome and stream codes for Python code: the same values the native
modules cimport from codes.pxd (which defines them, and from which the
OUTCOME_* / STREAM_* ints of this module come).

Name tables are indexed by code. The outcome names are also the `kind` label
values of fastgw_upstream_errors_total, and the stream names the `kind` of
the fastgw_streams_* series, so changing one changes the metrics.
"""

OUTCOME_NAMES = ("ok", "connect", "timeout", "reset", "bad_response", "5xx", "cancelled")
STREAM_NAMES = ("sse", "websocket")

# The outcome names the Python side has always used (the circuit breaker,
# outlier detection, their tests): the same ints under shorter names.
OK = OUTCOME_OK
CONNECT_FAILURE = OUTCOME_CONNECT
TIMEOUT = OUTCOME_TIMEOUT
RESET = OUTCOME_RESET
BAD_RESPONSE = OUTCOME_BAD_RESPONSE
STATUS_5XX = OUTCOME_5XX
CANCELLED = OUTCOME_CANCELLED

assert len(OUTCOME_NAMES) == N_OUTCOMES and len(STREAM_NAMES) == N_STREAM_KINDS
