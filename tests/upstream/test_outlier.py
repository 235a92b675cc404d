"""Outlier detection's arithmetic on a fake clock: thresholds, growing and
capped ejection times, decay, the share cap, and which outcomes count."""
from __future__ import annotations

import pytest

from fastgw._native.codes import BAD_RESPONSE, CANCELLED, CONNECT_FAILURE, OK, RESET, STATUS_5XX, TIMEOUT
from fastgw.config.health_model import OutlierDetection
from fastgw.upstream.outlier import OutlierDetector, ejection_seconds, max_ejected


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def detector(endpoints=("a", "b", "c", "d"), **config):
    clock = Clock()
    det = OutlierDetector(OutlierDetection(**config), "users", clock=clock)
    for endpoint in endpoints:
        det.add(endpoint)
    return det, clock


def fail(det, endpoint, times, outcome=STATUS_5XX):
    return [det.record(endpoint, outcome) for _ in range(times)]


def test_consecutive_5xx_eject_and_ok_resets_the_count():
    det, _ = detector(consecutive_5xx=3)
    assert fail(det, "a", 2) == [False, False]
    assert det.record("a", OK) is False
    assert fail(det, "a", 2) == [False, False]      # counting from 0 again
    assert det.record("a", BAD_RESPONSE) is True    # a malformed response counts as a 5xx
    assert det.is_ejected("a") and not det.is_ejected("b")


def test_connect_failures_count_separately_and_cancelled_counts_neither_way():
    det, _ = detector(consecutive_5xx=3, consecutive_connect_failures=2)
    assert det.record("a", CONNECT_FAILURE) is False
    assert det.record("a", CANCELLED) is False
    assert det.record("a", STATUS_5XX) is False     # a 5xx does not reset the connect count
    assert det.record("a", TIMEOUT) is True
    assert det.is_ejected("a")
    assert fail(det, "b", 2, RESET) == [False, True]


def test_ejection_time_grows_and_is_capped_and_the_endpoint_returns():
    det, clock = detector(consecutive_5xx=1, base_ejection=30.0, max_ejection=100.0)
    assert [ejection_seconds(det.config, n) for n in (1, 2, 3, 4, 5)] == [30, 60, 90, 100, 100]
    for expected in (30.0, 60.0, 90.0, 100.0):
        assert det.record("a", STATUS_5XX) is True
        assert det.next_return() == clock.now + expected
        clock.now += expected - 0.001
        assert det.expire() is False and det.is_ejected("a")
        assert det.record("a", STATUS_5XX) is False  # outcomes while ejected are old news
        clock.now += 0.001
        assert det.expire() is True and not det.is_ejected("a")
        assert det.next_return() is None


def test_the_count_decays_while_the_endpoint_stays_in_service():
    det, clock = detector(consecutive_5xx=1, base_ejection=10.0, max_ejection=300.0)
    for _ in range(3):                    # ejections 1, 2, 3: 10 + 20 + 30 s
        det.record("a", STATUS_5XX)
        clock.now = det.next_return()
        det.expire()
    clock.now += 25.0                     # two base periods back in service: 3 -> 1
    det.record("a", STATUS_5XX)
    assert det.next_return() - clock.now == 20.0   # the 2nd ejection's time, not the 4th's


@pytest.mark.parametrize("total, percent, allowed", [(4, 50, 2), (3, 50, 1), (1, 50, 0), (1, 100, 1),
                                                     (10, 10, 1), (10, 0, 0), (3, 66.67, 2)])
def test_max_ejected_rounds_down(total, percent, allowed):
    assert max_ejected(OutlierDetection(max_ejected_percent=percent), total) == allowed


def test_never_more_than_the_share_is_ejected():
    det, clock = detector(consecutive_5xx=2, max_ejected_percent=50)   # 2 of 4
    assert fail(det, "a", 2)[-1] and fail(det, "b", 2)[-1]
    assert fail(det, "c", 3) == [False, False, False]   # over the share: stays in service
    assert not det.is_ejected("c") and det.ejected == 2
    clock.now = det.next_return()
    assert det.expire() is True and det.ejected == 0
    assert det.record("c", STATUS_5XX) is True          # its count was kept: ejected at once now


def test_removed_endpoints_are_forgotten():
    det, _ = detector(consecutive_5xx=1)
    det.record("a", STATUS_5XX)
    det.remove("a")
    assert det.ejected == 0 and det.next_return() is None
    assert det.record("a", STATUS_5XX) is False         # a late outcome of a removed endpoint
    det.add("a")
    assert not det.is_ejected("a")
