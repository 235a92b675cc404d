"""Concurrency limits per route and per cluster, compiled into admission
stages (phase 4, `RoutePlan.admission`).

A route's requests pass its own limit first, then its cluster's. Both hold
for the whole host, across workers: the counts live in one shared-memory
`SlotTable` (fastgw/_native/concurrency.pyx, which says why and how).

Order of the two stages, and why it cannot deadlock
    Route slot first, then cluster slot, for every request. A request holds
    at most one slot while it waits for another, and always the route's
    while waiting for the cluster's, never the other way: slots are taken
    in one global order (like locks), so no cycle of waiters can form. It
    is also the cheaper order to hold: a route slot held while its cluster
    is full blocks only that route's own later requests, which could not
    have gone anyway (the cluster is full); holding a cluster slot while
    waiting for a route slot would block every other route of the cluster.
    A request refused or timed out by the cluster stage gives its route slot
    back at once (the exchange ends; on_finish releases it).

Starvation
    Each queue is FIFO for the host (tickets), so a waiter is overtaken by
    nobody who came later, and waits at most `queue_timeout`. A route with a
    limit fills at most its own `max_in_flight` of its cluster's slots.

Slots are held until the exchange ends in any way (response complete,
aborted, client gone, refused later). Retries happen inside the exchange
(phase 5 again, not phase 4), so a retried request keeps its one slot. A WebSocket exchange ends at the
upgrade (101): the tunnel that follows holds no slot, since a limit on
requests in flight must not be used up by sockets that live for hours.

The table is created by the master before it forks (`create_table`); each
worker claims its row when it builds its stages. The table is kept here, in
the module, because fork is how workers inherit it.
"""
from __future__ import annotations

from fastgw._native.concurrency import ConcurrencyLimit, SlotTable
from fastgw.config.model import Concurrency, Config
from fastgw.pipeline.phases import Phase

# Rows beyond one per worker: room for a replacement worker to start while a
# dead one's row is not yet reclaimed, and for a process that is not a worker.
SPARE_ROWS = 2

_inherited: SlotTable | None = None
_records: list[tuple[str, str]] = []   # the (kind, name) of each record of _inherited
_rows = 1 + SPARE_ROWS


def records(config: Config) -> list[tuple[str, str, Concurrency]]:
    """(kind, name, limit) per table record, in a fixed order derived from the
    config: the master and every worker must number them alike."""
    out = [("route", route.name, route.concurrency) for route in config.routes if route.concurrency]
    out += [("cluster", name, cluster.concurrency)
            for name, cluster in sorted(config.clusters.items()) if cluster.concurrency]
    return out


def table_for_reload(config: Config) -> SlotTable | None:
    """Before a reload's fork: keep the table when the new config limits the
    same routes and clusters (so slots held by the retiring generation still
    count against the new one), else make one for the new config. With a new
    table the old generation's in-flight requests are not counted: during
    that overlap the host may briefly exceed a changed limit."""
    global _inherited, _records
    wanted = [(kind, name) for kind, name, _ in records(config)]
    if _inherited is not None and wanted == _records:
        return _inherited
    rows = _inherited.rows if _inherited is not None else _rows
    _inherited = SlotTable(len(wanted), rows) if wanted else None
    _records = wanted
    return _inherited


def create_table(config: Config, workers: int) -> SlotTable | None:
    """The shared table, or None when nothing has a concurrency limit. Call
    in the master before forking: the workers inherit the mapping."""
    global _inherited, _records, _rows
    _records = [(kind, name) for kind, name, _ in records(config)]
    _rows = workers + SPARE_ROWS
    _inherited = SlotTable(len(_records), _rows) if _records else None
    return _inherited


def build_stages(config: Config, loop, table: SlotTable | None = None) -> dict[int, tuple]:
    """route.index -> (route stage?, cluster stage?) for routes with limits.
    Claims this process's row in the table (inherited from the master, or
    private to this process when no master made one, e.g. in-process tests)."""
    entries = records(config)
    if not entries:
        return {}
    if table is None:
        table = _inherited if _inherited is not None else SlotTable(len(entries), 1 + SPARE_ROWS)
    if table.records != len(entries):
        raise ValueError(f"the concurrency table has {table.records} records, the config needs {len(entries)}")
    table.claim()
    stages = {(kind, name): ConcurrencyLimit(table, record, limit.max_in_flight, limit.max_queue,
                                            limit.queue_timeout, f"{kind} '{name}'", loop)
              for record, (kind, name, limit) in enumerate(entries)}
    by_route = {}
    for route in config.routes:
        chain = tuple(stage for stage in (stages.get(("route", route.name)),
                                          stages.get(("cluster", route.cluster))) if stage is not None)
        if chain:
            by_route[route.index] = chain
    return by_route



class ConcurrencyPolicy:
    """Concurrency slots as stages of phase admission, after the rate limits
    (a request waiting on Redis must not hold a slot meanwhile); the route's
    slot before the cluster's."""
    name = "concurrency"
    phases = (Phase.ADMISSION,)

    def prepare(self, gateway) -> None:
        gateway.concurrency_stages = build_stages(gateway.config, gateway.loop)

    def install(self, builder, route) -> None:
        for stage in builder.gateway.concurrency_stages.get(route.index) or ():
            builder.add_stage(Phase.ADMISSION, stage)


POLICY = ConcurrencyPolicy()
