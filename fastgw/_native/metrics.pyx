# cython: language_level=3
"""Hot-path metrics: counters and histograms in shared memory, one slice per process.

`MetricsTable(slots, cells)` maps an anonymous shared mapping (MAP_SHARED) of
`slots` slices of `cells` int64 cells. The master creates it before forking;
worker N records only into slice N (`table.worker(N, ...)`), the master into
the last one. A process is the only writer of its slice, so recording is a
plain `+=` on a cell: no atomic instruction, no lock, no shared cache line
between workers (slices are 64-byte aligned apart). A reader (`sums()`) adds
the slices up; an aligned 8-byte load on x86-64 and arm64 is never torn, so
it sees each cell either before or after a concurrent update.

A restarted worker gets its predecessor's slot back, so counters keep growing
from where the dead process left them (Prometheus sees no reset); gauges are
the state of a process and are cleared by `WorkerMetrics.restart` (streams a
crash cut short are counted as closed first, so opened - closed = active).

Layout (which cell is which series) is fastgw/observe/metrics.py's business;
this module knows the fixed blocks declared in metrics.pxd: a global block,
then one block per route, then one per endpoint, then free-form cells for
the registry's families.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.string cimport memcmp

from fastgw._native.includes.shm cimport fg_shared_map, fg_shared_unmap

# Histogram upper bounds in seconds (the last bucket, +Inf, takes the rest).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
cdef int64_t _BOUNDS_NS[14]
for _i, _b in enumerate(BUCKETS):
    _BOUNDS_NS[_i] = <int64_t>(_b * 1e9 + 0.5)

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other")
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")

# The block layout, for the Python side (values from metrics.pxd).
LAYOUT = {
    "N_METHODS": N_METHODS, "N_STATUS": N_STATUS, "N_BUCKETS": N_BUCKETS, "HIST_CELLS": HIST_CELLS,
    "N_OUTCOMES": N_OUTCOMES,
    "R_REQUESTS": R_REQUESTS, "R_REQ_BYTES": R_REQ_BYTES, "R_RESP_BYTES": R_RESP_BYTES,
    "R_DURATION": R_DURATION, "R_UPSTREAM_DURATION": R_UPSTREAM_DURATION,
    "R_RL_ALLOWED": R_RL_ALLOWED, "R_RL_DENIED": R_RL_DENIED, "ROUTE_CELLS": ROUTE_CELLS,
    "E_OUTCOMES": E_OUTCOMES, "E_IDLE": E_IDLE, "E_BUSY": E_BUSY, "E_OPEN": E_OPEN,
    "E_CREATED": E_CREATED, "ENDPOINT_CELLS": ENDPOINT_CELLS,
    "G_CONNECTIONS_OPEN": G_CONNECTIONS_OPEN, "G_CONNECTIONS_TOTAL": G_CONNECTIONS_TOTAL,
    "G_IN_FLIGHT": G_IN_FLIGHT, "G_STREAMS_OPENED": G_STREAMS_OPENED,
    "G_STREAMS_CLOSED": G_STREAMS_CLOSED, "G_STREAMS_ACTIVE": G_STREAMS_ACTIVE,
    "GLOBAL_CELLS": GLOBAL_CELLS,
}


def monotonic_ns():
    """The clock durations are measured with (CLOCK_MONOTONIC, ns)."""
    return now_ns()


cdef int method_index(bytes method) noexcept:
    """Index into METHODS; anything unusual is "other" (bounded labels)."""
    cdef const char *s = PyBytes_AS_STRING(method)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(method)
    if n == 3:
        if memcmp(s, b"GET", 3) == 0:
            return 0
        if memcmp(s, b"PUT", 3) == 0:
            return 3
    elif n == 4:
        if memcmp(s, b"POST", 4) == 0:
            return 2
        if memcmp(s, b"HEAD", 4) == 0:
            return 1
    elif n == 6:
        if memcmp(s, b"DELETE", 6) == 0:
            return 4
    elif n == 5:
        if memcmp(s, b"PATCH", 5) == 0:
            return 5
        if memcmp(s, b"TRACE", 5) == 0:
            return 8
    elif n == 7:
        if memcmp(s, b"OPTIONS", 7) == 0:
            return 6
        if memcmp(s, b"CONNECT", 7) == 0:
            return 7
    return 9


def method_label(bytes method):
    return METHODS[method_index(method)]


cdef inline void _observe(int64_t *hist, int64_t ns) noexcept nogil:
    cdef int i = 0
    if ns < 0:
        ns = 0
    while i < 14 and ns > _BOUNDS_NS[i]:
        i += 1
    hist[i] += 1
    hist[N_BUCKETS] += ns


cdef inline int _status_class(int status) noexcept nogil:
    if 100 <= status < 600:
        return status // 100
    return 0


cdef class MetricsTable:
    """`slots` slices of `cells` int64 counters in one shared anonymous mapping."""
    cdef int64_t *base
    cdef size_t nbytes
    cdef readonly long slots
    cdef readonly long cells        # per slice, as asked
    cdef readonly long stride       # per slice, rounded up to whole cache lines

    def __cinit__(self, long slots, long cells):
        if slots < 1 or cells < 1:
            raise ValueError("slots and cells must be 1 or more")
        self.slots = slots
        self.cells = cells
        self.stride = (cells + 7) // 8 * 8
        self.nbytes = <size_t>(slots * self.stride) * sizeof(int64_t)
        cdef void *mem = fg_shared_map(self.nbytes)   # zeroed and touched
        if mem == NULL:
            self.base = NULL
            raise MemoryError(f"cannot map {self.nbytes} bytes of shared memory for metrics")
        self.base = <int64_t *>mem

    def __dealloc__(self):
        if self.base != NULL:
            fg_shared_unmap(self.base, self.nbytes)
            self.base = NULL

    cdef int64_t *slice(self, long slot) except NULL:
        if not 0 <= slot < self.slots:
            raise IndexError(f"metrics slot {slot} out of range 0..{self.slots - 1}")
        return self.base + slot * self.stride

    def sums(self):
        """Every cell summed over all slices: a list of `cells` ints."""
        cdef list out = []
        cdef long c, s
        cdef int64_t total
        for c in range(self.cells):
            total = 0
            for s in range(self.slots):
                total += self.base[s * self.stride + c]
            out.append(total)
        return out

    def read(self, long slot, long cell):
        return self.slice(slot)[self._cell(cell)]

    def write(self, long slot, long cell, long long value):
        """Set a cell of a slice (sampled gauges; the slice's owner only)."""
        self.slice(slot)[self._cell(cell)] = value

    def cell(self, long slot, long cell):
        """A handle on one cell of a slice, for Python code's counters and gauges."""
        cdef Cell handle = Cell.__new__(Cell)
        handle.ptr = self.slice(slot) + self._cell(cell)
        handle.table = self
        return handle

    cdef long _cell(self, long cell) except -1:
        if not 0 <= cell < self.cells:
            raise IndexError(f"metrics cell {cell} out of range 0..{self.cells - 1}")
        return cell

    def worker(self, long slot, int routes, long route_base, int endpoints, long endpoint_base):
        """The recorder for the process owning `slot`: `routes` route blocks
        (block 0: requests no route took) and `endpoints` endpoint blocks."""
        if route_base + <long>routes * ROUTE_CELLS > self.cells or \
                endpoint_base + <long>endpoints * ENDPOINT_CELLS > self.cells:
            raise ValueError("route or endpoint blocks beyond the table")
        cdef WorkerMetrics w = WorkerMetrics.__new__(WorkerMetrics)
        w.cells = self.slice(slot)
        w.table = self
        w.slot = slot
        w.routes = routes
        w.endpoints = endpoints
        w.route_base = route_base
        w.endpoint_base = endpoint_base
        return w


cdef class Cell:
    """One int64 cell of this process's slice: a counter's or a gauge's value
    in this process. The reader sums the slices."""
    cdef int64_t *ptr
    cdef object table

    cpdef void inc(self, long long n=1):
        self.ptr[0] += n

    cpdef void dec(self, long long n=1):
        self.ptr[0] -= n

    cpdef void set(self, long long value):
        self.ptr[0] = value

    @property
    def value(self):
        return self.ptr[0]


cdef class WorkerMetrics:
    """What proxy.pyx calls per request: plain adds into this process's slice."""

    cdef void request_done(self, int route, bytes method, int status, int64_t duration_ns,
                           int64_t upstream_ns, int64_t bytes_in, int64_t bytes_out) noexcept:
        if route < 0 or route >= self.routes:
            route = 0  # the "no route" block
        cdef int64_t *block = self.cells + self.route_base + <Py_ssize_t>route * ROUTE_CELLS
        block[R_REQUESTS + method_index(method) * N_STATUS + _status_class(status)] += 1
        block[R_REQ_BYTES] += bytes_in
        block[R_RESP_BYTES] += bytes_out
        _observe(block + R_DURATION, duration_ns)
        self.cells[G_IN_FLIGHT] -= 1

    cdef void upstream_done(self, int endpoint, int route, int outcome, int64_t duration_ns) noexcept:
        if 0 <= outcome < N_OUTCOMES and 0 <= endpoint < self.endpoints:
            self.cells[self.endpoint_base + <Py_ssize_t>endpoint * ENDPOINT_CELLS + E_OUTCOMES + outcome] += 1
        if 0 <= route < self.routes:
            _observe(self.cells + self.route_base + <Py_ssize_t>route * ROUTE_CELLS + R_UPSTREAM_DURATION,
                     duration_ns)

    cdef void rate_limited(self, int route, bint allowed) noexcept:
        if 0 <= route < self.routes:
            self.cells[self.route_base + <Py_ssize_t>route * ROUTE_CELLS
                       + (R_RL_ALLOWED if allowed else R_RL_DENIED)] += 1

    cdef void add(self, Py_ssize_t cell, int64_t n) noexcept:
        self.cells[cell] += n

    cpdef void stream_opened(self, int kind):
        self.cells[G_STREAMS_OPENED + kind] += 1
        self.cells[G_STREAMS_ACTIVE + kind] += 1

    cpdef void stream_closed(self, int kind):
        self.cells[G_STREAMS_CLOSED + kind] += 1
        self.cells[G_STREAMS_ACTIVE + kind] -= 1

    def request_started(self):
        self.cells[G_IN_FLIGHT] += 1

    def restart(self, gauge_cells):
        """A new process took this slot: streams the old one still had open
        ended with it (counted closed), and every gauge starts from zero."""
        cdef int kind
        for kind in range(N_STREAM_KINDS):
            self.cells[G_STREAMS_CLOSED + kind] += self.cells[G_STREAMS_ACTIVE + kind]
        for cell in gauge_cells:
            self.cells[<Py_ssize_t>cell] = 0

    def value(self, Py_ssize_t cell):
        return self.cells[cell]

    def set(self, Py_ssize_t cell, long long value):
        self.cells[cell] = value
