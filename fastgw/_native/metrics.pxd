# Declarations shared with fastgw/_native/proxy.pyx, which records into a
# worker's slice of the shared metrics table without going through Python.
from libc.stdint cimport int64_t

cdef enum:
    N_METHODS = 10          # GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE other
    N_STATUS = 6            # none (no response sent), 1xx, 2xx, 3xx, 4xx, 5xx
    N_BUCKETS = 15          # histogram buckets, +Inf included (bounds in metrics.pyx)
    HIST_CELLS = 16         # the buckets (non-cumulative) + the sum in ns
    N_OUTCOMES = 7          # proxy.pyx OUTCOME_*
    STREAM_SSE = 0
    STREAM_WS = 1

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
    G_STREAMS_OPENED = 3      # [kind]
    G_STREAMS_CLOSED = 5      # [kind]
    G_STREAMS_ACTIVE = 7      # [kind], gauge
    GLOBAL_CELLS = 9


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


cdef int64_t now_ns() noexcept nogil
cdef int method_index(bytes method) noexcept
