"""Config errors: collected, not raised one at a time.

A user fixing a config wants every mistake in one run (like `nginx -t`), so the
loader records each problem in an `ErrorList` and raises one `ConfigError` at
the end. Every line reads `{file}: {keypath}: {problem} ({hint})`.
"""
from __future__ import annotations

import os


class ConfigError(Exception):
    """The config is unusable; `.errors` holds one formatted line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class Invalid(Exception):
    """Raised by a value parser; the caller knows the key path and records it."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


class ErrorList:
    """The errors found so far in one config source (a file or the command line)."""

    def __init__(self, source: str, directory: str | None = None) -> None:
        self.source = source
        # What the source's relative paths are relative to: the config file's
        # directory, unless the source is no file (PUT /config names the file
        # it changes).
        self.directory = directory if directory is not None else os.path.dirname(os.path.abspath(source))
        self.lines: list[str] = []

    def add(self, keypath: str, problem: str, hint: str) -> None:
        self.lines.append(f"{self.source}: {keypath}: {problem} ({hint})")

    def add_invalid(self, keypath: str, invalid: Invalid) -> None:
        self.add(keypath, invalid.problem, invalid.hint)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


def child(keypath: str, key: object) -> str:
    """`routes[3]` + `match` -> `routes[3].match`; the top level has no prefix."""
    name = show_key(key)
    return f"{keypath}.{name}" if keypath else name


def show_key(key: object) -> str:
    """A mapping key as the user wrote it; quoted when it would not read back
    (a key with control characters or spaces around it); null reads `null`."""
    if key is None:
        return "null"
    text = str(key)
    if isinstance(key, str) and text.isprintable() and text.strip() == text and text:
        return text if len(text) <= 60 else text[:56] + "..."
    shown = repr(key)
    return shown if len(shown) <= 60 else shown[:56] + "..."


def item(keypath: str, index: int) -> str:
    return f"{keypath}[{index}]"
