"""Reading a running gateway's /metrics figures.

Until the admin listener serves /metrics, the test asks the master for the
same text: with FASTGW_METRICS_DUMP set in its environment, SIGUSR1 makes the
master write `render_prometheus(...)` of the shared table to that file. The
text is parsed with prometheus_client's parser, as a Prometheus server would.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DUMP_ENV = "FASTGW_METRICS_DUMP"


def enable_dump(monkeypatch, tmp_path: Path) -> Path:
    """Call before starting the gateway: where its master writes the metrics."""
    path = tmp_path / "metrics.prom"
    monkeypatch.setenv(DUMP_ENV, str(path))
    return path


def scrape_text(gw, path: Path, timeout: float = 5.0) -> str:
    if path.exists():
        path.unlink()
    gw.signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no metrics dump at {path}\n{gw.logs()}"
        time.sleep(0.02)
    return path.read_text()


class Samples(dict):
    """(sample name, frozenset of label pairs) -> value, from the text format."""

    def get_value(self, name: str, **labels) -> float:
        return self.get((name, frozenset(labels.items())), 0.0)

    def matching(self, name: str, **labels) -> dict:
        want = set(labels.items())
        return {dict(k[1]).__repr__(): v for k, v in self.items() if k[0] == name and want <= k[1]}

    def total(self, name: str, **labels) -> float:
        return sum(self.matching(name, **labels).values())


# Suffixes OpenMetrics gives a family's samples: a name that is another
# family's name plus one of these is the same family to an OpenMetrics
# parser (a gauge `x` and a counter `x_total` clash), and `_created` is the
# counters' creation-time sample.
RESERVED_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info")


def check_names(text: str) -> list:
    """The families of a Prometheus text, after checking that an OpenMetrics
    reader would see the same ones: no two families share a name once
    prometheus_client's parser has taken `_total` off counters, no family is
    another's name plus a reserved suffix, and no name uses `_created`."""
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"one family name for several metrics: {duplicates}"
    known = set(names)
    for family in families:
        for suffix in RESERVED_SUFFIXES:
            assert family.name + suffix not in known, f"{family.name + suffix} reads as part of {family.name}"
        assert "_created" not in family.name, f"{family.name}: _created is a reserved suffix"
        for sample in family.samples:
            assert not sample.name.endswith("_created"), sample.name
    return families


def scrape(gw, path: Path) -> Samples:
    text = scrape_text(gw, path)
    samples = Samples()
    for family in check_names(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples


async def connections_on_each_worker(port: int, workers: int, per_worker: int, probe_path: str,
                                     attempts: int = 400, body_bytes: list | None = None):
    """Open keep-alive connections until each of `workers` workers holds
    `per_worker` of them (a worker is told by the request-id prefix it
    stamps on the answer to one GET `probe_path` per connection). Accepts on
    a shared socket are not spread evenly, so a test that must load every
    worker asks for it. Returns (connections, connections opened in all);
    the extra ones are closed. `body_bytes`, when given, gets the length of
    every probe's response body."""
    import asyncio

    by_worker: dict[bytes, list] = {}
    opened = 0
    extra = []
    while opened < attempts:
        if len(by_worker) == workers and all(len(c) >= per_worker for c in by_worker.values()):
            break
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened += 1
        writer.write(f"GET {probe_path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        if body_bytes is not None:
            body_bytes.append(length)
        prefix = head.lower().split(b"x-request-id: ")[1].split(b"-")[0]
        group = by_worker.setdefault(prefix, [])
        (group if len(group) < per_worker else extra).append((reader, writer))
    assert len(by_worker) == workers, f"connections reached {len(by_worker)} of {workers} workers"
    for _, writer in extra:
        writer.close()
    return [c for group in by_worker.values() for c in group], opened
