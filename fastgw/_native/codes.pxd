# Codes shared by the native modules and the Python side, defined once.
#
# `cpdef enum`: a C constant for every module that cimports it (proxy.pyx,
# metrics.pxd) and a plain Python int of the same name on fastgw._native.codes
# for the Python side (policy/circuit.py, upstream/outlier.py, the tunnel,
# observe/metrics.py). Name tables are in codes.pyx.

# How an exchange's use of an endpoint ended, reported to the cluster
# (`ClusterRuntime.report(pool, outcome)`) for circuit breaking and outlier
# detection, and counted per endpoint in the metrics (metrics.pxd E_OUTCOMES).
cpdef enum:
    OUTCOME_OK = 0
    OUTCOME_CONNECT = 1        # refused / unreachable: nothing reached the upstream
    OUTCOME_TIMEOUT = 2        # connect or response-header timeout
    OUTCOME_RESET = 3          # closed before a complete response head
    OUTCOME_BAD_RESPONSE = 4   # malformed or ambiguous response
    OUTCOME_5XX = 5            # a 5xx status from the upstream
    OUTCOME_CANCELLED = 6      # the client went away: says nothing about the upstream
    N_OUTCOMES = 7

# Kinds of long-lived streams the metrics count (opened / closed / active).
cpdef enum:
    STREAM_SSE = 0             # a text/event-stream response (proxy.pyx)
    STREAM_WS = 1              # a WebSocket tunnel after 101 (proxy/tunnel.py)
    N_STREAM_KINDS = 2
