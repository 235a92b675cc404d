"""Prometheus metrics for the whole gateway, aggregated across workers.

Storage
    One shared-memory table (fastgw/_native/metrics.pyx) made by the master
    before it forks: a slice of int64 cells per worker plus one for the
    master. Each process writes only its own slice, with plain adds, no lock
    and no atomic instruction; `render_prometheus` sums the slices. A worker
    that dies is restarted into the same slot, so counters never go back;
    its gauges restart from zero (see WorkerMetrics.restart).

Which cell is which series is the `Layout`, computed from the config the
same way in every process: a global block, one block per route (block 0 for
requests no route matched, label route="(none)"), one per endpoint, then the
registry's families, with room for a reloaded config's new names (see
Layout; a reload calls `ProcessMetrics.adopt(config)`, which Gateway does). Labels are bounded by construction: route and
cluster names and endpoint addresses from the config, the method from a fixed
set (GET ... TRACE, else "other"), the status class; never a raw path or IP.

Series (seconds, bytes; `fastgw_` prefix)
    fastgw_requests_total{route,method,status}      counter (status: 1xx..5xx, none)
    fastgw_request_duration_seconds{route}          histogram: request head read -> last byte written
    fastgw_upstream_duration_seconds{route}         histogram: one use of an endpoint, checkout -> release
    fastgw_request_bytes_total{route}, fastgw_response_bytes_total{route}   body bytes
    fastgw_requests_in_flight, fastgw_client_connections_active (gauges), fastgw_client_connections_total
    fastgw_upstream_requests_total{cluster,endpoint}
    fastgw_upstream_errors_total{cluster,endpoint,kind}  kind: connect, timeout, reset, bad_response
    fastgw_upstream_connections{cluster,endpoint,state}  gauge, state: idle, busy (sampled each second)
    fastgw_upstream_connections_opened_total{cluster,endpoint}
    fastgw_circuit_state{cluster,state}             gauge: workers whose breaker is in that state
    fastgw_rate_limit_decisions_total{route,result} result: allowed, denied
    fastgw_streams_opened_total{kind}, fastgw_streams_closed_total{kind}, fastgw_streams_active{kind}
                                                    kind: sse, websocket
    fastgw_build_info{version,python}, fastgw_start_time_seconds, fastgw_uptime_seconds, fastgw_workers
    process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds
                                                    the standard names (stock dashboards work), but the
                                                    workers' processes summed (sampled each second);
    process_start_time_seconds                      the master's start

Serving /metrics (the admin listener)
    shared = create_metrics(config, workers)    # the master, before forking
    body = render_prometheus(shared)            # any process, any time after
    headers: Content-Type: CONTENT_TYPE
    `shared` is the `SharedMetrics` the master passes to every worker
    (Master.metrics; run_worker's `metrics`; a worker's Gateway has it as
    `gateway.process_metrics.shared`). Rendering reads the mapping only:
    0.5 ms for 3 routes, 4.5 ms for 50 routes and 20 endpoints with 4
    workers (measured on the shared 2-core VM); no lock, no I/O. None means metrics are off
    (answer 404 or an empty body). After a reload, render from a process
    that adopted the new config (a worker's gateway does it itself; the
    master must call shared.layout.adopt(config) before rendering there).

Registry for other components (counters and gauges with fixed label sets)
    Declare the family from the config in a source, a function config ->
    [Family] (Family is in fastgw/observe/families.py, which imports
    nothing, so the component's module need not import this one), and list
    the source in FAMILY_SOURCES below:

        def retry_families(config):
            return [Family("fastgw_retries_total", "counter", "Retries sent, by cluster.",
                           labels=("cluster",), series=[(name,) for name in config.clusters])]

    then, in the process that counts (a worker, or the master), take the
    handle once and call it on the event:

        retries = gateway.metrics.counter("fastgw_retries_total", cluster="users")
        retries.inc()          # a C add into this process's slice (~40 ns from Python)

    `gauge(...)` gives the same handle with .set(v) / .inc() / .dec(). Values
    are int64 cells; a family with `scale=1000` renders cell/1000 (so
    milliseconds can be stored for a seconds gauge). A gauge is summed over
    processes: per-worker state is exported as "how many workers are in it"
    (as fastgw_circuit_state is), a master-only value is just the master's.
    Asking for an undeclared name or label set raises KeyError: series are
    never created on the fly, so cardinality is fixed at config load.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable

from fastgw import __version__
from fastgw._native import metrics as native
from fastgw._native.codes import (
    BAD_RESPONSE, CONNECT_FAILURE, N_STREAM_KINDS, OUTCOME_NAMES, RESET, STREAM_NAMES, TIMEOUT,
)
from fastgw._native.metrics import BUCKETS, METHODS, STATUS_CLASSES, MetricsTable
from fastgw.observe.families import Family
from fastgw.observe.auth_metrics import auth_families
from fastgw.observe.policy_metrics import policy_families

L = native.LAYOUT
NO_ROUTE = "(none)"
# Outcome code -> the `kind` label of fastgw_upstream_errors_total.
ERROR_KINDS = {code: OUTCOME_NAMES[code] for code in (CONNECT_FAILURE, TIMEOUT, RESET, BAD_RESPONSE)}
CIRCUIT_STATES = ("closed", "open", "half-open")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def builtin_families(config) -> list[Family]:
    return [Family("process_resident_memory_bytes", "gauge",
                   "Resident memory of the worker processes, summed over them (sampled each second)."),
            Family("process_cpu_seconds_total", "counter",
                   "CPU time (user + system) of the worker processes, past ones included.", scale=1000),
            Family("process_open_fds", "gauge", "Open file descriptors of the worker processes, summed over them."),
            Family("fastgw_circuit_state", "gauge",
                   "Workers whose circuit breaker for the cluster is in this state.",
                   labels=("cluster", "state"),
                   series=[(name, state) for name, c in config.clusters.items()
                           if c.circuit_breaker is not None for state in CIRCUIT_STATES])]


# Functions config -> [Family], in layout order: the built-in families, then
# the policies' (retries, ejections, health, Redis, concurrency).
FAMILY_SOURCES: list[Callable[[object], Iterable[Family]]] = [builtin_families, policy_families,
                                                                  auth_families]


class Layout:
    """Cell offsets of every series (identical in every process that saw the
    same configs in the same order).

    Blocks are keyed by name, not position, and the table is made with room
    for twice the config's routes, endpoints and family series (+16/+16/+64),
    so a reloaded config can be `adopt`ed into the same table: a route,
    endpoint or series it already had keeps its cells (counters go on), new
    ones take free blocks. Past that room, new routes count under
    route="(none)", new endpoints and family series are not counted, and
    `adopt` says so (a restart sizes the table anew).
    """

    def __init__(self, config):
        self.route_names: list[str] = [NO_ROUTE]            # block -> name; block 0: no route
        self.route_block: dict[str, int] = {}
        self.endpoints: list[tuple[str, str]] = []           # block -> (cluster, address)
        self.endpoint_index: dict[tuple[str, str], int] = {}
        self.families: dict[str, Family] = {}
        self.family_cells: dict[str, dict[tuple[str, ...], int]] = {}
        routes = len(config.routes)
        endpoints = sum(len(c.endpoints) for c in config.clusters.values())
        series = sum(len(f.series) for f in _declared(config))
        self.route_capacity = 1 + 2 * routes + 16
        self.endpoint_capacity = 2 * endpoints + 16
        self.route_base = L["GLOBAL_CELLS"]
        self.endpoint_base = self.route_base + self.route_capacity * L["ROUTE_CELLS"]
        self.family_base = self.endpoint_base + self.endpoint_capacity * L["ENDPOINT_CELLS"]
        self.family_next = self.family_base
        self.cells = self.family_base + 2 * series + 64
        left_out = self.adopt(config)
        assert not left_out, left_out

    def adopt(self, config) -> list[str]:
        """Give blocks to what `config` has that this layout lacks; what did
        not fit (empty when all did)."""
        left_out = []
        for route in config.routes:
            if route.name not in self.route_block:
                if len(self.route_names) < self.route_capacity:
                    self.route_block[route.name] = len(self.route_names)
                    self.route_names.append(route.name)
                else:
                    left_out.append(f"route {route.name}")
        for name, cluster in config.clusters.items():
            for endpoint in cluster.endpoints:
                key = (name, endpoint.address)
                if key not in self.endpoint_index:
                    if len(self.endpoints) < self.endpoint_capacity:
                        self.endpoint_index[key] = len(self.endpoints)
                        self.endpoints.append(key)
                    else:
                        left_out.append(f"endpoint {name}/{endpoint.address}")
        for family in _declared(config):
            known = self.families.setdefault(family.name, family)
            if (known.kind, known.labels) != (family.kind, family.labels):
                raise ValueError(f"metric family {family.name} changed its kind or labels")
            cells = self.family_cells.setdefault(family.name, {})
            for values in family.series:
                if values not in cells:
                    if self.family_next < self.cells:
                        cells[values] = self.family_next
                        self.family_next += 1
                    else:
                        left_out.append(f"series {family.name}{values}")
        return left_out

    @property
    def routes(self) -> int:
        return self.route_capacity

    @property
    def gauge_cells(self) -> tuple[int, ...]:
        gauges = [L["G_CONNECTIONS_OPEN"], L["G_IN_FLIGHT"],
                  *(L["G_STREAMS_ACTIVE"] + kind for kind in range(N_STREAM_KINDS))]
        for e in range(self.endpoint_capacity):
            gauges += [self.endpoint_cell(e, L["E_IDLE"]), self.endpoint_cell(e, L["E_BUSY"]),
                       self.endpoint_cell(e, L["E_OPEN"])]
        for family in self.families.values():
            if family.kind == "gauge":
                gauges += self.family_cells[family.name].values()
        return tuple(gauges)

    def endpoint_cell(self, index: int, offset: int) -> int:
        return self.endpoint_base + index * L["ENDPOINT_CELLS"] + offset

    def family_cell(self, name: str, labels: dict[str, str]) -> tuple[Family, int]:
        family = self.families.get(name)
        if family is None:
            raise KeyError(f"metric family {name!r} is not declared (add it to FAMILY_SOURCES)")
        values = tuple(labels.get(label) for label in family.labels)
        cells = self.family_cells[name]
        if set(labels) != set(family.labels) or values not in cells:
            raise KeyError(f"{name}{labels!r}: not a declared series of {name} "
                           f"(labels {family.labels!r})")
        return family, cells[values]


def _declared(config) -> list[Family]:
    families = [family for source in FAMILY_SOURCES for family in source(config)]
    names = [f.name for f in families]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"metric family {name} declared twice")
    return families


class SharedMetrics:
    """The table and its layout. Create it in the master before forking
    (`create_metrics`); every process then holds the same mapping."""

    def __init__(self, config, workers: int):
        self.layout = Layout(config)
        self.workers = workers
        self.master_slot = workers
        self.table = MetricsTable(workers + 1, self.layout.cells)
        self.started_at = time.time()

    def process(self, slot: int) -> "ProcessMetrics":
        return ProcessMetrics(self, slot)


def create_metrics(config, workers: int) -> SharedMetrics | None:
    """The shared table, or None when `metrics.enabled` is false."""
    if not config.observe.metrics.enabled:
        return None
    return SharedMetrics(config, workers)


class ProcessMetrics:
    """One process's side: the native recorder proxy.pyx calls, the registry
    handles, and the once-a-second sampling of pool and breaker state.
    Make one per process (it clears the slot's gauges: the slot's previous
    process is gone); on a reload, `adopt` the new config instead."""

    def __init__(self, shared: SharedMetrics, slot: int):
        self.shared = shared
        self.layout = shared.layout
        self.recorder = shared.table.worker(slot, self.layout.routes, self.layout.route_base,
                                            self.layout.endpoint_capacity, self.layout.endpoint_base)
        self.recorder.restart(self.layout.gauge_cells)
        self.slot = slot
        self._created_base: dict[int, int] = {}
        self._process_cells = None

    def counter(self, name: str, **labels: str):
        return self._handle(name, "counter", labels)

    def gauge(self, name: str, **labels: str):
        return self._handle(name, "gauge", labels)

    def _sample_process(self) -> None:
        if self._process_cells is None:
            cells = [self.layout.family_cell(name, {})[1] for name in
                     ("process_resident_memory_bytes", "process_cpu_seconds_total",
                      "process_open_fds")]
            # CPU is a counter: what this slot's earlier processes used stays in.
            self._process_cells = (*cells, self.recorder.value(cells[1]))
        rss_cell, cpu_cell, fds_cell, cpu_base = self._process_cells
        try:
            with open("/proc/self/statm", "rb") as statm:
                rss = int(statm.read().split()[1]) * _PAGE
            fds = len(os.listdir("/proc/self/fd"))
        except OSError:  # not Linux: leave them at 0
            rss = fds = 0
        times = os.times()
        self.recorder.set(rss_cell, rss)
        self.recorder.set(fds_cell, fds)
        self.recorder.set(cpu_cell, cpu_base + int((times.user + times.system) * 1000))

    def _handle(self, name, kind, labels):
        family, cell = self.layout.family_cell(name, labels)
        if family.kind != kind:
            raise KeyError(f"{name} is a {family.kind}, not a {kind}")
        return self.shared.table.cell(self.slot, cell)

    def adopt(self, config) -> list[str]:
        """A reloaded config: see Layout.adopt. Every process that renders or
        records must adopt the same configs in the same order."""
        return self.layout.adopt(config)

    def route_block(self, name: str) -> int:
        """The metrics block of a route (RoutePlan.index); 0: "(none)"."""
        return self.layout.route_block.get(name, 0)

    def endpoint_index(self, cluster: str, address: str) -> int:
        """The endpoint's block; -1 (not counted) past the table's room."""
        return self.layout.endpoint_index.get((cluster, address), -1)

    def sample(self, clusters) -> None:
        """Pool and breaker gauges, from `ClusterRuntime`s, and this process's
        resources (once a second)."""
        rec = self.recorder
        layout = self.layout
        self._sample_process()
        for name, runtime in clusters.items():
            for pool in runtime.pools:
                index = pool.metrics_index
                if index < 0:
                    continue
                idle = len(pool.idle)
                rec.set(layout.endpoint_cell(index, L["E_IDLE"]), idle)
                rec.set(layout.endpoint_cell(index, L["E_BUSY"]), max(pool.open - idle, 0))
                rec.set(layout.endpoint_cell(index, L["E_OPEN"]), pool.open)
                created = layout.endpoint_cell(index, L["E_CREATED"])
                base = self._created_base.get(created)
                if base is None:  # what predecessors in this slot created
                    base = self._created_base[created] = rec.value(created)
                rec.set(created, base + pool.created)
            breaker = getattr(runtime, "breaker", None)
            if breaker is not None:
                current = breaker.state
                if current == "open" and breaker.clock() >= breaker.open_until:
                    current = "half-open"  # what the next request finds (the breaker moves lazily)
                for state in CIRCUIT_STATES:
                    _, cell = layout.family_cell("fastgw_circuit_state", {"cluster": name, "state": state})
                    rec.set(cell, 1 if current == state else 0)


# --- the text format -------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs) + "}"


def _num(value) -> str:
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


_BUCKET_LABELS = [_num(b) for b in BUCKETS] + ["+Inf"]


class _Text:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name, kind, help_):
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name, pairs, value):
        self.lines.append(f"{name}{_labels(pairs)} {_num(value)}")

    def histogram(self, name, pairs, cells):
        total = 0
        for label, count in zip(_BUCKET_LABELS, cells[:L["N_BUCKETS"]]):
            total += count
            self.sample(name + "_bucket", [*pairs, ("le", label)], total)
        self.sample(name + "_sum", pairs, cells[L["N_BUCKETS"]] / 1e9)
        self.sample(name + "_count", pairs, total)


def render_prometheus(shared: SharedMetrics) -> bytes:
    """The Prometheus text format (0.0.4) of every series, summed over all
    processes. Callable from any process that inherited `shared` (a worker or
    the master); it only reads the mapping. Serve with CONTENT_TYPE."""
    sums = shared.table.sums()
    layout = shared.layout
    out = _Text()
    g = lambda key: sums[L[key]]  # noqa: E731

    out.family("fastgw_build_info", "gauge", "fastgw version and Python it runs on.")
    out.sample("fastgw_build_info", [("version", __version__), ("python", platform.python_version())], 1)
    out.family("fastgw_start_time_seconds", "gauge", "Start time of the master, seconds since the epoch.")
    out.sample("fastgw_start_time_seconds", [], round(shared.started_at, 3))
    # The standard name too, so stock process dashboards show the uptime.
    out.family("process_start_time_seconds", "gauge", "Start time of the master, seconds since the epoch.")
    out.sample("process_start_time_seconds", [], round(shared.started_at, 3))
    out.family("fastgw_uptime_seconds", "gauge", "Seconds since the master started.")
    out.sample("fastgw_uptime_seconds", [], round(time.time() - shared.started_at, 3))
    out.family("fastgw_workers", "gauge", "Worker processes configured.")
    out.sample("fastgw_workers", [], shared.workers)

    out.family("fastgw_client_connections_active", "gauge", "Open client connections.")
    out.sample("fastgw_client_connections_active", [], g("G_CONNECTIONS_OPEN"))
    out.family("fastgw_client_connections_total", "counter", "Client connections accepted.")
    out.sample("fastgw_client_connections_total", [], g("G_CONNECTIONS_TOTAL"))
    out.family("fastgw_requests_in_flight", "gauge", "Requests read whose response is not finished.")
    out.sample("fastgw_requests_in_flight", [], g("G_IN_FLIGHT"))

    routes = list(enumerate(layout.route_names))
    stride = L["ROUTE_CELLS"]

    def block(i):
        start = layout.route_base + i * stride
        return sums[start:start + stride]

    blocks = {i: block(i) for i, _ in routes}
    out.family("fastgw_requests_total", "counter", "Requests answered, by route, method and status class "
               "(1xx..5xx; none: ended without an answer, e.g. the client left).")
    for i, name in routes:
        cells = blocks[i]
        for m, method in enumerate(METHODS):
            for s, status in enumerate(STATUS_CLASSES):
                count = cells[L["R_REQUESTS"] + m * L["N_STATUS"] + s]
                if count:
                    out.sample("fastgw_requests_total", [("route", name), ("method", method), ("status", status)], count)
    for metric, offset, help_ in (
            ("fastgw_request_duration_seconds", "R_DURATION",
             "From the end of the request head to the last response byte written."),
            ("fastgw_upstream_duration_seconds", "R_UPSTREAM_DURATION",
             "One use of an upstream endpoint: from checkout (or dial) to release.")):
        out.family(metric, "histogram", help_)
        for i, name in routes:
            cells = blocks[i][L[offset]:L[offset] + L["HIST_CELLS"]]
            if any(cells):
                out.histogram(metric, [("route", name)], cells)
    for metric, offset, help_ in (("fastgw_request_bytes_total", "R_REQ_BYTES", "Request body bytes received."),
                                  ("fastgw_response_bytes_total", "R_RESP_BYTES",
                                   "Response body bytes relayed from upstreams (local error replies not counted).")):
        out.family(metric, "counter", help_)
        for i, name in routes:
            out.sample(metric, [("route", name)], blocks[i][L[offset]])
    out.family("fastgw_rate_limit_decisions_total", "counter", "Rate-limit checks, by route and result.")
    for i, name in routes:
        for result, offset in (("allowed", "R_RL_ALLOWED"), ("denied", "R_RL_DENIED")):
            if blocks[i][L[offset]]:
                out.sample("fastgw_rate_limit_decisions_total", [("route", name), ("result", result)],
                           blocks[i][L[offset]])

    eps = [(e, cluster, address, sums[layout.endpoint_cell(e, 0):layout.endpoint_cell(e, L["ENDPOINT_CELLS"])])
           for e, (cluster, address) in enumerate(layout.endpoints)]
    out.family("fastgw_upstream_requests_total", "counter", "Uses of an upstream endpoint (one per attempt).")
    for _, cluster, address, cells in eps:
        out.sample("fastgw_upstream_requests_total", [("cluster", cluster), ("endpoint", address)],
                   sum(cells[L["E_OUTCOMES"]:L["E_OUTCOMES"] + L["N_OUTCOMES"]]))
    out.family("fastgw_upstream_errors_total", "counter", "Failed uses of an upstream endpoint, by kind.")
    for _, cluster, address, cells in eps:
        for outcome, kind in ERROR_KINDS.items():
            out.sample("fastgw_upstream_errors_total",
                       [("cluster", cluster), ("endpoint", address), ("kind", kind)],
                       cells[L["E_OUTCOMES"] + outcome])
    out.family("fastgw_upstream_connections", "gauge",
               "Upstream connections open, idle in the pool or busy (sampled each second).")
    for _, cluster, address, cells in eps:
        for state, offset in (("idle", "E_IDLE"), ("busy", "E_BUSY")):
            out.sample("fastgw_upstream_connections", [("cluster", cluster), ("endpoint", address), ("state", state)],
                       cells[L[offset]])
    out.family("fastgw_upstream_connections_opened_total", "counter", "Upstream connections opened.")
    for _, cluster, address, cells in eps:
        out.sample("fastgw_upstream_connections_opened_total", [("cluster", cluster), ("endpoint", address)],
                   cells[L["E_CREATED"]])

    for metric, offset, kind, help_ in (
            ("fastgw_streams_opened_total", "G_STREAMS_OPENED", "counter", "Streams opened (SSE responses, WebSocket tunnels)."),
            ("fastgw_streams_closed_total", "G_STREAMS_CLOSED", "counter", "Streams closed."),
            ("fastgw_streams_active", "G_STREAMS_ACTIVE", "gauge", "Streams open now.")):
        out.family(metric, kind, help_)
        for k, stream in enumerate(STREAM_NAMES):
            value = sums[L[offset] + k]
            out.sample(metric, [("kind", stream)], max(value, 0) if kind == "gauge" else value)

    for family in layout.families.values():
        if not layout.family_cells[family.name]:
            continue
        out.family(family.name, family.kind, family.help)
        for values, cell in layout.family_cells[family.name].items():
            value = sums[cell]
            out.sample(family.name, list(zip(family.labels, values)),
                       value / family.scale if family.scale != 1 else value)
    out.lines.append("")
    return "\n".join(out.lines).encode()
