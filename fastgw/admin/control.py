"""What the admin API's config changes share across processes.

`PUT /config` and `PATCH /config/...` are answered by whichever worker
accepted the connection, but a change must reach every worker and must not
race another change answered elsewhere. The master creates one `Control`
before the first fork; every worker inherits it:

    a private directory (mode 0700, removed when the master exits) holding
        change.lock    flock()ed by the worker making a change, from
                       validation to the reload's end: one change at a time
                       across all workers (another gets 409)
        pending.json   the validated declarative document, written by that
                       worker (temp file + rename) just before it sends
                       SIGHUP; the master takes it (reads, then removes it)
                       at the start of the reload and builds the new
                       generation from it instead of reading the file. The
                       reload itself is the one SIGHUP and POST /reload use.
    the audit ring: shared anonymous memory (so bounded, and the same for
        every worker and every later generation) of the last AUDIT_ENTRIES
        entries, written under audit.lock.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import struct
import tempfile

import orjson

AUDIT_ENTRIES = 256
AUDIT_ENTRY_BYTES = 16 * 1024
_COUNT = struct.Struct("<Q")
_LEN = struct.Struct("<I")


class Busy(Exception):
    """Another config change is in progress."""


class Control:
    def __init__(self, directory: str | None = None, entries: int = AUDIT_ENTRIES):
        self.directory = directory or tempfile.mkdtemp(prefix="fastgw-admin-")
        os.chmod(self.directory, 0o700)
        self.owner = os.getpid()
        self.entries = entries
        self.ring = mmap.mmap(-1, _COUNT.size + entries * AUDIT_ENTRY_BYTES)  # anonymous, MAP_SHARED

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # -- one change at a time ------------------------------------------------------
    def try_lock(self) -> int:
        """An fd holding the change lock (close it to release); Busy if taken."""
        fd = os.open(self.path("change.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy() from None
        return fd

    # -- the document handed to the master ------------------------------------------
    def put_pending(self, document: object) -> str:
        """Leave `document` for the master's next reload; returns the id
        the master puts in that reload's result (`change`)."""
        change = os.urandom(8).hex()
        data = orjson.dumps({"id": change, "document": document}, option=orjson.OPT_NON_STR_KEYS)
        temp = self.path("pending.json.tmp")
        with open(temp, "wb") as out:
            out.write(data)
        os.replace(temp, self.path("pending.json"))
        return change

    def take_pending(self) -> dict | None:
        """The master: {"id", "document"} to reload from, or None (reload the file)."""
        path = self.path("pending.json")
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None
        os.unlink(path)
        return orjson.loads(data)

    def drop_pending(self) -> None:
        try:
            os.unlink(self.path("pending.json"))
        except FileNotFoundError:
            pass

    # -- the audit ring -------------------------------------------------------------
    def _audit_lock(self, kind: int) -> int:
        fd = os.open(self.path("audit.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, kind)  # held for a copy in memory: microseconds
        return fd

    def append_audit(self, entry: dict) -> dict:
        """Store `entry` (its `diff` shortened if it does not fit); returns
        what was stored, with its sequence number `id`."""
        fd = self._audit_lock(fcntl.LOCK_EX)
        try:
            count = _COUNT.unpack_from(self.ring, 0)[0]
            entry = {"id": count + 1, **entry}
            data = _fit(entry)
            offset = _COUNT.size + (count % self.entries) * AUDIT_ENTRY_BYTES
            _LEN.pack_into(self.ring, offset, len(data))
            self.ring[offset + _LEN.size:offset + _LEN.size + len(data)] = data
            _COUNT.pack_into(self.ring, 0, count + 1)
            return orjson.loads(data)
        finally:
            os.close(fd)

    def audit(self, limit: int | None = None) -> tuple[int, list[dict]]:
        """(entries ever recorded, the kept ones oldest first, at most `limit`)."""
        fd = self._audit_lock(fcntl.LOCK_SH)
        try:
            count = _COUNT.unpack_from(self.ring, 0)[0]
            first = max(0, count - self.entries)
            if limit is not None:
                first = max(first, count - limit)
            out = []
            for number in range(first, count):
                offset = _COUNT.size + (number % self.entries) * AUDIT_ENTRY_BYTES
                size = _LEN.unpack_from(self.ring, offset)[0]
                out.append(orjson.loads(self.ring[offset + _LEN.size:offset + _LEN.size + size]))
            return count, out
        finally:
            os.close(fd)

    def close(self) -> None:
        """The master, on exit."""
        if os.getpid() == self.owner:
            shutil.rmtree(self.directory, ignore_errors=True)


def _fit(entry: dict) -> bytes:
    room = AUDIT_ENTRY_BYTES - _LEN.size
    data = orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS)
    diff = list(entry.get("diff") or ())
    while len(data) > room and diff:
        diff = diff[: len(diff) // 2]
        data = orjson.dumps({**entry, "diff": diff, "diff_truncated": len(entry["diff"]) - len(diff)},
                            option=orjson.OPT_NON_STR_KEYS)
    if len(data) > room:
        data = orjson.dumps({k: entry[k] for k in ("id", "time", "who", "action", "result") if k in entry}
                            | {"diff_truncated": len(entry.get("diff") or ())}, option=orjson.OPT_NON_STR_KEYS)
    return data
