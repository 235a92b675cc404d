"""The circuit breaker's state machine (fastgw/policy/circuit.py) on an injected clock."""
from __future__ import annotations

import logging

import pytest

from fastgw._native.codes import BAD_RESPONSE, CANCELLED, CONNECT_FAILURE, OK, RESET, STATUS_5XX, TIMEOUT
from fastgw.config.model import CircuitBreaker as BreakerConfig
from fastgw.policy.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from fastgw.proxy.errors import ProxyError

FAILURES = (CONNECT_FAILURE, TIMEOUT, RESET, BAD_RESPONSE, STATUS_5XX)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**config) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerConfig(**config), "users", clock=clock), clock


def refused(breaker: CircuitBreaker) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        breaker.admit()
    return caught.value


def serve(breaker: CircuitBreaker, outcome: int) -> None:
    breaker.admit()
    breaker.record(outcome)


@pytest.mark.parametrize("failure", FAILURES)
def test_consecutive_failures_open_the_circuit(failure):
    breaker, _ = make(failures=3)
    serve(breaker, failure)
    serve(breaker, failure)
    assert breaker.state is CLOSED
    serve(breaker, failure)
    assert breaker.state is OPEN


def test_ok_resets_the_consecutive_count_and_cancelled_counts_neither_way():
    breaker, _ = make(failures=3)
    for outcome in (STATUS_5XX, STATUS_5XX, OK, STATUS_5XX, STATUS_5XX, CANCELLED, CANCELLED):
        serve(breaker, outcome)
    assert breaker.state is CLOSED and breaker.consecutive == 2
    serve(breaker, TIMEOUT)
    assert breaker.state is OPEN


def test_open_refuses_with_503_and_retry_after_until_open_for_passes():
    breaker, clock = make(failures=1, open_for=10.0)
    serve(breaker, RESET)
    error = refused(breaker)
    assert (error.status, error.code) == (503, "circuit_open")
    assert error.headers == b"Retry-After: 10\r\n"
    assert "users" in error.message
    clock.now += 7.5
    assert refused(breaker).headers == b"Retry-After: 3\r\n"  # rounded up
    clock.now += 2.4
    assert refused(breaker).headers == b"Retry-After: 1\r\n"  # never 0
    clock.now += 0.1
    breaker.admit()  # the probe
    assert breaker.state is HALF_OPEN


def test_outcomes_while_open_are_ignored():
    breaker, clock = make(failures=1, open_for=5.0)
    breaker.admit()
    breaker.admit()  # two in flight
    breaker.record(STATUS_5XX)
    assert breaker.state is OPEN
    breaker.record(OK)  # the other one, admitted before opening
    assert breaker.state is OPEN
    clock.now += 1
    assert refused(breaker).code == "circuit_open"


def test_half_open_probe_success_closes():
    breaker, clock = make(failures=2, open_for=1.0)
    serve(breaker, STATUS_5XX)
    serve(breaker, STATUS_5XX)
    clock.now += 1.0
    breaker.admit()
    assert breaker.state is HALF_OPEN
    assert refused(breaker).headers == b"Retry-After: 1\r\n"  # only one probe at a time
    breaker.record(OK)
    assert breaker.state is CLOSED
    serve(breaker, STATUS_5XX)  # fresh counts after closing
    assert breaker.state is CLOSED


def test_half_open_probe_failure_reopens_for_open_for():
    breaker, clock = make(failures=1, open_for=2.0)
    serve(breaker, CONNECT_FAILURE)
    clock.now += 2.0
    breaker.admit()
    clock.now += 0.5
    breaker.record(TIMEOUT)
    assert breaker.state is OPEN
    assert refused(breaker).headers == b"Retry-After: 2\r\n"  # a full open_for from the failure
    clock.now += 2.0
    breaker.admit()
    assert breaker.state is HALF_OPEN


def test_several_probes_must_all_succeed():
    breaker, clock = make(failures=1, open_for=1.0, half_open_probes=3)
    serve(breaker, STATUS_5XX)
    clock.now += 1.0
    for _ in range(3):
        breaker.admit()
    refused(breaker)
    breaker.record(OK)
    breaker.record(OK)
    assert breaker.state is HALF_OPEN
    refused(breaker)  # the successes don't free slots: the third probe is still out
    breaker.record(BAD_RESPONSE)
    assert breaker.state is OPEN


def test_all_probes_succeeding_closes():
    breaker, clock = make(failures=1, open_for=1.0, half_open_probes=2)
    serve(breaker, STATUS_5XX)
    clock.now += 1.0
    breaker.admit()
    breaker.admit()
    breaker.record(OK)
    assert breaker.state is HALF_OPEN
    breaker.record(OK)
    assert breaker.state is CLOSED


def test_cancelled_probe_frees_its_slot():
    breaker, clock = make(failures=1, open_for=1.0)
    serve(breaker, STATUS_5XX)
    clock.now += 1.0
    breaker.admit()
    refused(breaker)
    breaker.record(CANCELLED)
    assert breaker.state is HALF_OPEN
    breaker.admit()  # another probe may go
    breaker.record(OK)
    assert breaker.state is CLOSED


def test_release_frees_a_probe_that_found_no_endpoint():
    breaker, clock = make(failures=1, open_for=1.0)
    serve(breaker, STATUS_5XX)
    clock.now += 1.0
    breaker.admit()
    breaker.release()
    breaker.admit()
    assert breaker.probes_admitted == 1


def test_failure_ratio_waits_for_min_requests():
    breaker, _ = make(failure_ratio=0.5, window=10, min_requests=4)
    serve(breaker, STATUS_5XX)
    serve(breaker, STATUS_5XX)
    serve(breaker, STATUS_5XX)
    assert breaker.state is CLOSED  # 3 of 3 failed, but fewer than min_requests counted
    serve(breaker, STATUS_5XX)
    assert breaker.state is OPEN


def test_failure_ratio_over_a_sliding_window():
    breaker, _ = make(failure_ratio=0.5, window=4, min_requests=4)
    for outcome in (OK, OK, OK, STATUS_5XX):  # 1 of 4
        serve(breaker, outcome)
    serve(breaker, OK)  # window: OK OK 5XX OK
    serve(breaker, STATUS_5XX)  # window: OK 5XX OK 5XX -> 2 of 4
    assert breaker.state is OPEN


def test_failure_ratio_forgets_what_left_the_window():
    breaker, _ = make(failure_ratio=0.75, window=4, min_requests=4)
    for outcome in (STATUS_5XX, STATUS_5XX, OK, OK, OK, OK, STATUS_5XX, STATUS_5XX):
        serve(breaker, outcome)
    # The last four are OK OK 5XX 5XX: half, under 0.75; the early failures left the window.
    assert breaker.state is CLOSED and breaker.recent_failures == 2
    serve(breaker, STATUS_5XX)  # OK 5XX 5XX 5XX
    assert breaker.state is OPEN


def test_failure_ratio_ignores_cancelled_and_resets_after_closing():
    breaker, clock = make(failure_ratio=0.5, window=4, min_requests=2, open_for=1.0)
    serve(breaker, OK)
    for _ in range(5):
        serve(breaker, CANCELLED)
    assert len(breaker.recent) == 1
    serve(breaker, STATUS_5XX)  # 1 of 2
    assert breaker.state is OPEN
    clock.now += 1.0
    serve(breaker, OK)
    assert breaker.state is CLOSED and len(breaker.recent) == 0


def test_each_transition_is_logged_once(caplog):
    breaker, clock = make(failures=1, open_for=1.0)
    with caplog.at_level(logging.INFO, logger="fastgw"):
        serve(breaker, STATUS_5XX)
        refused(breaker)
        breaker.record(STATUS_5XX)  # ignored while open: no second "opened"
        clock.now += 1.0
        breaker.admit()
        refused(breaker)
        breaker.record(OK)
        serve(breaker, OK)
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "fastgw"]
    assert [level for level, _ in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "'users' opened" in records[0][1]
    assert "half-open" in records[1][1]
    assert "closed" in records[2][1]
