"""Reader for a `concurrency` block, on a route or on a cluster:

    concurrency: {max_in_flight: 4, max_queue: 16, queue_timeout: 5s}

`max_in_flight` is required; `max_queue` (default 0: no queue, a full limit
answers 503 at once) and `queue_timeout` (default 10s, only meaningful with
a queue) are optional.
"""
from __future__ import annotations

from functools import partial

from fastgw.config import model
from fastgw.config.model import Concurrency
from fastgw.config.reader import Section
from fastgw.config.schema import parse_duration, parse_int

CONCURRENCY_KEYS = ("max_in_flight", "max_queue", "queue_timeout")
# Where these keys belong when written one level too high (route or cluster).
CONCURRENCY_KEY_HOMES = dict.fromkeys(CONCURRENCY_KEYS, "concurrency")
CONCURRENCY_HINT = "write a mapping, e.g. concurrency: {max_in_flight: 4, max_queue: 16, queue_timeout: 5s}"


def read_concurrency(parent: Section) -> Concurrency | None:
    """The parent's `concurrency` block, or None when it has none (or it is
    too broken to use; the errors are recorded)."""
    if "concurrency" not in parent.raw:
        return None
    section = parent.section("concurrency", CONCURRENCY_KEYS, hint=CONCURRENCY_HINT)
    max_in_flight = section.require("max_in_flight", partial(parse_int, minimum=1, example=4), None,
                                    "say how many requests may be in flight at once, e.g. max_in_flight: 4")
    max_queue = section.parse("max_queue", partial(parse_int, minimum=0, example=16), None)
    queue_timeout = section.parse("queue_timeout", parse_duration, model.DEFAULT_CONCURRENCY_QUEUE_TIMEOUT)
    if section.has("queue_timeout"):
        if not section.has("max_queue"):
            section.errors.add(section.path("queue_timeout"), "only used with max_queue",
                               "add max_queue, e.g. 16, so requests wait for a slot, or remove queue_timeout")
        elif max_queue == 0:  # (an invalid max_queue was reported already)
            section.errors.add(section.path("queue_timeout"), "only used when max_queue is above 0",
                               "with max_queue: 0 nothing waits; set max_queue, e.g. 16, or remove queue_timeout")
    if max_queue is None:
        max_queue = model.DEFAULT_CONCURRENCY_MAX_QUEUE
    if max_in_flight is None:
        return None
    return Concurrency(max_in_flight=max_in_flight, max_queue=max_queue, queue_timeout=queue_timeout)
