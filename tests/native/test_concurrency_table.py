"""The shared-memory slot table of concurrency limits
(fastgw/_native/concurrency.pyx), called directly: counts, the FIFO ticket
order, and that it holds across real forked processes, including one that
dies holding slots."""
from __future__ import annotations

import os
import signal
import time

import pytest

from fastgw._native.concurrency import QUEUED_TICKET, REFUSED, TOOK_SLOT, SlotTable


def claimed(records=1, rows=4) -> SlotTable:
    table = SlotTable(records, rows)
    table.claim()
    return table


def test_slots_up_to_the_limit_then_refused_and_released():
    table = claimed()
    assert [table.try_take(0, 3)[0] for _ in range(3)] == [TOOK_SLOT] * 3
    assert table.try_take(0, 3) == (REFUSED, -1)
    assert table.in_flight(0) == 3
    table.give_back(0)
    assert table.in_flight(0) == 2
    assert table.try_take(0, 3)[0] == TOOK_SLOT


def test_records_are_independent():
    table = claimed(records=2)
    assert table.try_take(0, 1)[0] == TOOK_SLOT
    assert table.try_take(1, 1)[0] == TOOK_SLOT
    assert table.try_take(0, 1)[0] == REFUSED
    assert (table.in_flight(0), table.in_flight(1)) == (1, 1)


def test_queue_is_bounded_and_tickets_grow():
    table = claimed()
    assert table.try_take(0, 1, 2)[0] == TOOK_SLOT
    first = table.try_take(0, 1, 2)
    second = table.try_take(0, 1, 2)
    assert first[0] == second[0] == QUEUED_TICKET
    assert second[1] == first[1] + 1
    assert table.try_take(0, 1, 2)[0] == REFUSED  # queue full
    assert table.queued(0) == 2


def test_newcomer_does_not_jump_the_queue_and_only_the_oldest_ticket_is_granted():
    table = claimed()
    assert table.try_take(0, 1, 5)[0] == TOOK_SLOT
    _, t1 = table.try_take(0, 1, 5)
    _, t2 = table.try_take(0, 1, 5)
    table.give_back(0)  # a slot is free, but t1 and t2 wait:
    assert table.try_take(0, 1, 5)[0] == QUEUED_TICKET  # a newcomer queues behind them
    assert table.try_grant(0, 1, t2) is False           # t2 is not the oldest
    assert table.try_grant(0, 1, t1, next_head=t2) is True
    assert table.in_flight(0) == 1 and table.queued(0) == 2
    assert table.try_grant(0, 1, t2) is False           # no free slot


def test_claim_before_use():
    table = SlotTable(1, 2)
    with pytest.raises(RuntimeError, match="claim"):
        table.try_take(0, 1)


def _in_child(table: SlotTable, work) -> int:
    """Run `work(table)` in a forked child that claims its own row; returns
    the child's pid once work is done (the child then sleeps until killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            table.claim()
            work(table)
            os.write(write, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.close(read)
    return pid


def test_limit_is_shared_by_processes():
    table = SlotTable(1, 4)  # mapped before the fork, as the master does
    child = _in_child(table, lambda t: [t.try_take(0, 3) for _ in range(2)])
    try:
        table.claim()
        assert table.in_flight(0) == 2
        assert table.try_take(0, 3)[0] == TOOK_SLOT
        assert table.try_take(0, 3)[0] == REFUSED  # 2 in the child + 1 here
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_slots_of_a_dead_process_are_reclaimed():
    table = SlotTable(1, 3)
    child = _in_child(table, lambda t: [t.try_take(0, 2, 4) for _ in range(4)])  # 2 slots, 2 queued
    table.claim()
    assert table.in_flight(0) == 2 and table.queued(0) == 2
    assert table.reclaim_dead() == 0  # alive: nothing to take back
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert table.reclaim_dead() == 1
    assert table.in_flight(0) == 0 and table.queued(0) == 0
    assert table.try_take(0, 2)[0] == TOOK_SLOT  # its queue ticket no longer blocks anyone


def test_a_new_process_takes_over_a_dead_row():
    table = SlotTable(1, 1)  # one row only: the replacement must reuse it
    child = _in_child(table, lambda t: t.try_take(0, 1))
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert table.in_flight(0) == 1
    assert table.claim() == 0
    assert table.in_flight(0) == 0
