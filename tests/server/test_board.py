"""The status board across a real fork: what one process writes, the other reads."""
from __future__ import annotations

import os

from fastgw.server.board import StatusBoard


def test_worker_slot_and_master_header_cross_a_fork():
    board = StatusBoard(capacity=4)
    board.set_generation(3)
    pid = os.fork()
    if pid == 0:  # the "worker": publish into slot 2, then leave
        board.publish(2, os.getpid(), 3, 1, True, {"clusters": {"a": {"n": 1}}})
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (slot,) = board.slots()
    assert (slot.slot, slot.pid, slot.generation, slot.index, slot.ready) == (2, pid, 3, 1, True)
    assert slot.snapshot == {"clusters": {"a": {"n": 1}}}
    board.clear_slot(2)
    assert board.slots() == []

    header = board.header()
    assert (header.draining, header.generation, header.reloads_done, header.last_result) == (False, 3, 0, None)
    board.reload_started()
    board.reload_done({"ok": False, "code": "invalid_config", "generation": 3, "errors": ["x"]})
    board.reload_started()
    board.reload_done({"ok": True, "generation": 4, "errors": []})
    board.set_draining()
    header = board.header()
    assert (header.reloads_started, header.reloads_done, header.reloads_failed) == (2, 2, 1)
    assert header.last_result == {"ok": True, "generation": 4, "errors": []} and header.draining


def test_a_huge_error_list_is_cut_not_lost():
    board = StatusBoard(capacity=1)
    errors = [f"gw.yaml: routes[{i}].cluster: unknown cluster 'c{i}' (defined clusters: a, b)" for i in range(5000)]
    board.reload_done({"ok": False, "code": "invalid_config", "generation": 1, "errors": errors})
    result = board.header().last_result
    assert result["errors"][0] == errors[0] and result["errors"][-1] == "(more errors: see the log)"
    assert 10 < len(result["errors"]) < len(errors)
