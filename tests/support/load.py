"""A steady, bounded client load for reload and drain tests.

Threads send GETs with http.client, half on keep-alive connections (a new
connection only when the gateway answered `Connection: close`), half on a
new connection per request. Every failure is recorded: an exception
(refused, reset, closed early, timeout) or a status other than 200. Bounded
in time (`run_for`) and count (`max_requests` per thread).
"""
from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Outcome:
    at: float
    ok: bool
    status: int | None = None
    header: str | None = None      # the watched response header's value
    error: str | None = None
    keepalive: bool = False


@dataclass
class LoadClient:
    port: int
    path: str = "/fixed"
    watch_header: str = "x-config"
    threads: int = 6
    max_requests: int = 20000
    timeout: float = 10.0
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> "LoadClient":
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        assert not any(w.is_alive() for w in self._workers), "a load thread did not finish"

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _run(self, keepalive: bool) -> None:
        conn = None
        for _ in range(self.max_requests):
            if self._stop.is_set():
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            started = time.monotonic()
            try:
                conn.request("GET", self.path, headers={} if keepalive else {"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                outcome = Outcome(started, resp.status == 200, resp.status, resp.getheader(self.watch_header),
                                  keepalive=keepalive)
                if not keepalive or resp.will_close:
                    conn.close()
                    conn = None
            except Exception as error:  # every kind counts as a failure
                outcome = Outcome(started, False, error=f"{type(error).__name__}: {error}", keepalive=keepalive)
                conn.close()
                conn = None
            self._record(outcome)
        if conn is not None:
            conn.close()

    # -- reading the results -------------------------------------------------------
    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if not o.ok]

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def summary(self) -> str:
        with self._lock:
            total = len(self.outcomes)
            kept = sum(1 for o in self.outcomes if o.keepalive)
            failed = [o for o in self.outcomes if not o.ok]
        lines = [f"{total} requests ({kept} on keep-alive connections), {len(failed)} failed"]
        lines += [f"  at {o.at:.3f}: status {o.status} error {o.error}" for o in failed[:20]]
        return "\n".join(lines)
