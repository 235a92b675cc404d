# Declarations shared with fastgw/_native/proxy.pyx, which records into a
# worker's slice of the shared metrics table without going through Python.
from libc.stdint cimport int64_t

# Outcome and stream codes (codes.pxd): cimported here for the block layout,
# and so proxy.pyx can take STREAM_SSE from this module as it always has.
from fastgw._native.codes cimport N_OUTCOMES, N_STREAM_KINDS, STREAM_SSE, STREAM_WS
# The clock durations are measured with (fastgw_clock.h), as `now_ns`.
from fastgw._native.includes.clock cimport fg_monotonic_ns as now_ns

cdef enum:
    N_METHODS = 10          # GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE other
    N_STATUS = 6            # none (no response sent), 1xx, 2xx, 3xx, 4xx, 5xx
    N_BUCKETS = 15          # histogram buckets, +Inf included (bounds in metrics.pyx)
    HIST_CELLS = 16         # the buckets (non-cumulative) + the sum in ns

# Per-route block: cell offsets within the block.
cdef enum:
    R_REQUESTS = 0                                  # [method][status]
    R_REQ_BYTES = N_METHODS * N_STATUS
    R_RESP_BYTES = R_REQ_BYTES + 1
    R_DURATION = R_RESP_BYTES + 1                   # histogram
    R_UPSTREAM_DURATION = R_DURATION + HIST_CELLS   # histogram
    R_RL_ALLOWED = R_UPSTREAM_DURATION + HIST_CELLS
    R_RL_DENIED = R_RL_ALLOWED + 1
    ROUTE_CELLS = R_RL_DENIED + 1

# Per-endpoint block.
cdef enum:
    E_OUTCOMES = 0                   # [outcome]: one per use of the endpoint
    E_IDLE = N_OUTCOMES              # gauges sampled once a second
    E_BUSY = E_IDLE + 1
    E_OPEN = E_BUSY + 1
    E_CREATED = E_OPEN + 1           # counter, sampled (kept monotonic across restarts)
    ENDPOINT_CELLS = E_CREATED + 1

# Cells of the global block (at offset 0 of a slice).
cdef enum:
    G_CONNECTIONS_OPEN = 0    # gauge
    G_CONNECTIONS_TOTAL = 1
    G_IN_FLIGHT = 2           # gauge
    G_STREAMS_OPENED = 3                                 # [kind]
    G_STREAMS_CLOSED = G_STREAMS_OPENED + N_STREAM_KINDS # [kind]
    G_STREAMS_ACTIVE = G_STREAMS_CLOSED + N_STREAM_KINDS # [kind], gauge
    GLOBAL_CELLS = G_STREAMS_ACTIVE + N_STREAM_KINDS


cdef class WorkerMetrics:
    cdef int64_t *cells        # this process's slice (global block first)
    cdef readonly object table # keeps the mapping alive
    cdef readonly int slot
    cdef Py_ssize_t route_base
    cdef Py_ssize_t endpoint_base
    cdef readonly int routes   # route blocks: 0 for "no route", then the routes (and room for more)
    cdef readonly int endpoints

    cdef void request_done(self, int route, bytes method, int status, int64_t duration_ns,
                           int64_t upstream_ns, int64_t bytes_in, int64_t bytes_out) noexcept
    cdef void upstream_done(self, int endpoint, int route, int outcome, int64_t duration_ns) noexcept
    cdef void rate_limited(self, int route, bint allowed) noexcept
    cdef void add(self, Py_ssize_t cell, int64_t n) noexcept
    cpdef void stream_opened(self, int kind)
    cpdef void stream_closed(self, int kind)


cdef int method_index(bytes method) noexcept
