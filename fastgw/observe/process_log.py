"""The process log (the `fastgw` logger: starts, reloads, health, circuit
transitions, Redis outages), as text or as JSON lines.

    fastgw run ... --log-format text|json --log-level debug|info|warning|error
    (or FASTGW_LOG_FORMAT / FASTGW_LOG_LEVEL; the flags win)

`text` (the default on a terminal) goes to stderr as before:
    2026-12-03 13:30:00,123 fastgw[812] INFO worker 0 started ...
`json` (the default when stdout is not a terminal: a container, systemd, a
pipe to a collector) goes to stdout, one object per line, the same stream
as an access log with `path: stdout`, told apart by `"log": "process"`:
    {"time": "2026-12-03T13:30:00.123Z", "level": "info", "log": "process",
     "logger": "fastgw", "pid": 812, "message": "worker 0 started ..."}
plus `"error"` (the traceback) when a record carries an exception.

Each record is one os.write of one whole line, so workers sharing the
stream never interleave inside a line (lines up to PIPE_BUF, 4 KiB, are
atomic on a pipe; the master and workers share one file offset on a file).
Configured in the master before it forks: the workers inherit it.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping

import orjson

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s fastgw[%(process)d] %(levelname)s %(message)s"


class JsonLineHandler(logging.Handler):
    """One JSON object per record, written to `fd` with one write."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def format_line(self, record: logging.LogRecord) -> bytes:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "log": "process",
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = logging.Formatter().formatException(record.exc_info)
        return orjson.dumps(entry, default=str) + b"\n"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = memoryview(self.format_line(record))
            while data:
                data = data[os.write(self.fd, data):]
        except Exception:  # noqa: BLE001 - logging must never take the process down
            self.handleError(record)


def default_format(stdout=None) -> str:
    stdout = sys.stdout if stdout is None else stdout
    try:
        return "text" if stdout.isatty() else "json"
    except (AttributeError, ValueError):   # closed or replaced stdout
        return "json"


def choose(flag: str | None, env: Mapping[str, str], variable: str, allowed: tuple[str, ...],
           default: str) -> str:
    """The flag, else the variable, else the default; ValueError names the bad one."""
    value, source = (flag, f"--{variable.removeprefix('FASTGW_').lower().replace('_', '-')}") if flag else \
        (env.get(variable, "").strip(), f"env {variable}")
    if not value:
        return default
    if value.lower() not in allowed:
        raise ValueError(f"{source}: {value!r} is not one of {', '.join(allowed)}")
    return value.lower()


# What the command line chose (`select`), installed by the server when it
# starts (`install`): the CLI decides, but only a serving process changes
# the logging of the interpreter it runs in.
_selected: tuple[str, str] = ("text", "info")


def select(fmt: str, level: str) -> None:
    global _selected
    _selected = (fmt, level)


def install() -> None:
    """Configure the process log as selected (text on stderr at info when
    nothing was): called by fastgw.server.master.serve."""
    configure(*_selected)


def configure(fmt: str, level: str) -> None:
    """Install the process log's one handler on the root logger (replacing
    any), at `level`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if fmt == "json":
        handler: logging.Handler = JsonLineHandler(sys.stdout.fileno())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
