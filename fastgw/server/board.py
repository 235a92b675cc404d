"""The status board: a small shared-memory area the master maps before the
first fork, through which the processes tell each other what they are doing.

    header (written by the master only)
        draining flag, current generation, reloads started / done, the last
        reload's result (JSON: ok, code, generation, errors) and when
    one slot per worker process (written by that worker only)
        pid, generation, index, ready flag, and a JSON snapshot of its
        clusters (pool counters, circuit and endpoint states) published
        once a second and before each admin answer

Any worker answering the admin API reads the header (is the gateway
draining? what did the last reload do?) and every slot of the current
generation, so /clusters shows all workers, not the one that answered.
The reload count and last result live here for the metrics too.

Each region has one writer and is guarded by a sequence counter (odd while
a write is in progress): readers copy, then retry if the counter moved. The
size is fixed at start: `capacity` slots (4 per configured worker, at least
32), so a reload can run old and new generations side by side.
"""
from __future__ import annotations

import mmap
import struct
import time

import orjson

HEADER_SIZE = 64 * 1024
SLOT_SIZE = 64 * 1024

# seq, draining, generation, reloads_started, reloads_done, reloads_failed, last_time, started_at, result_len
_HEADER = struct.Struct("<QIIQQQddI")
# seq, pid, generation, index, ready, published_at, payload_len
_SLOT = struct.Struct("<QIIIIdI")
_SEQ = struct.Struct("<Q")
_READ_TRIES = 1000


class Header:
    """The master's part of the board. For metrics: `reloads_done` (attempts
    finished), `reloads_failed`, `last_result` ({"ok", "code", "generation",
    "errors"}) and `last_time` (Unix time of the last reload's end)."""
    __slots__ = ("draining", "generation", "reloads_started", "reloads_done", "reloads_failed", "last_time",
                 "started_at", "last_result")

    def __init__(self, draining, generation, reloads_started, reloads_done, reloads_failed, last_time, started_at,
                 last_result):
        self.draining = bool(draining)
        self.generation = generation
        self.reloads_started = reloads_started
        self.reloads_done = reloads_done
        self.reloads_failed = reloads_failed
        self.last_time = last_time
        self.started_at = started_at
        self.last_result = last_result  # dict, or None before the first reload


class Slot:
    __slots__ = ("slot", "pid", "generation", "index", "ready", "published_at", "snapshot")

    def __init__(self, slot, pid, generation, index, ready, published_at, snapshot):
        self.slot = slot
        self.pid = pid
        self.generation = generation
        self.index = index
        self.ready = bool(ready)
        self.published_at = published_at
        self.snapshot = snapshot  # dict, or None before the first publish


class StatusBoard:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.map = mmap.mmap(-1, HEADER_SIZE + capacity * SLOT_SIZE)  # anonymous, MAP_SHARED
        # seq, draining, generation, started, done, failed, last_time, started_at, result JSON
        self._header_values = [0, 0, 0, 0, 0, 0, 0.0, time.time(), b""]
        self._write_header()

    # -- master side -----------------------------------------------------------
    def set_draining(self):
        self._header_values[1] = 1
        self._write_header()

    def set_generation(self, generation: int):
        self._header_values[2] = generation
        self._write_header()

    def reload_started(self) -> int:
        self._header_values[3] += 1
        self._write_header()
        return self._header_values[3]

    def reload_done(self, result: dict):
        values = self._header_values
        values[4] += 1
        if not result.get("ok"):
            values[5] += 1
        values[6] = time.time()
        data = orjson.dumps(result)
        if len(data) > HEADER_SIZE - _HEADER.size:  # thousands of errors: keep the first ones
            errors = list(result.get("errors", ()))
            while errors and len(data) > HEADER_SIZE - _HEADER.size:
                errors = errors[: len(errors) // 2]
                data = orjson.dumps({**result, "errors": errors + ["(more errors: see the log)"]})
        values[8] = data
        self._write_header()

    def _write_header(self):
        m = self.map
        seq = _SEQ.unpack_from(m, 0)[0] + 1
        _SEQ.pack_into(m, 0, seq)  # odd: writing
        values = self._header_values
        data = values[8]
        _HEADER.pack_into(m, 0, seq, *values[1:8], len(data))
        m[_HEADER.size:_HEADER.size + len(data)] = data
        _SEQ.pack_into(m, 0, seq + 1)

    def clear_slot(self, slot: int):
        """The worker in `slot` is gone (reaped): nobody else writes it now."""
        offset = HEADER_SIZE + slot * SLOT_SIZE
        seq = _SEQ.unpack_from(self.map, offset)[0]
        _SLOT.pack_into(self.map, offset, seq + 2, 0, 0, 0, 0, 0.0, 0)

    # -- worker side -----------------------------------------------------------
    def publish(self, slot: int, pid: int, generation: int, index: int, ready: bool, snapshot: dict | None):
        offset = HEADER_SIZE + slot * SLOT_SIZE
        m = self.map
        data = orjson.dumps(snapshot) if snapshot is not None else b""
        if len(data) > SLOT_SIZE - _SLOT.size:
            data = orjson.dumps({"truncated": True, "bytes": len(data)})
        seq = _SEQ.unpack_from(m, offset)[0] + 1
        _SEQ.pack_into(m, offset, seq)
        _SLOT.pack_into(m, offset, seq, pid, generation, index, int(ready), time.time(), len(data))
        start = offset + _SLOT.size
        m[start:start + len(data)] = data
        _SEQ.pack_into(m, offset, seq + 1)

    # -- readers -----------------------------------------------------------------
    def header(self) -> Header:
        m = self.map
        for _ in range(_READ_TRIES):
            fields = _HEADER.unpack_from(m, 0)
            seq = fields[0]
            if seq & 1:
                continue
            data = m[_HEADER.size:_HEADER.size + fields[8]]
            if _SEQ.unpack_from(m, 0)[0] == seq:
                return Header(*fields[1:8], orjson.loads(data) if data else None)
        raise RuntimeError("status board header kept changing while read")

    def slot(self, slot: int) -> Slot | None:
        offset = HEADER_SIZE + slot * SLOT_SIZE
        m = self.map
        for _ in range(_READ_TRIES):
            fields = _SLOT.unpack_from(m, offset)
            seq = fields[0]
            if seq & 1:
                continue
            start = offset + _SLOT.size
            data = m[start:start + fields[6]]
            if _SEQ.unpack_from(m, offset)[0] == seq:
                if not fields[1]:
                    return None
                return Slot(slot, *fields[1:6], orjson.loads(data) if data else None)
        return None  # a worker rewriting its slot continuously: skip it this time

    def slots(self) -> list[Slot]:
        return [s for s in (self.slot(i) for i in range(self.capacity)) if s is not None]
