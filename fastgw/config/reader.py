"""`Section`: reads one YAML mapping, keeping its key path for error messages.

The section readers never raise on bad input: a bad value is recorded in the
`ErrorList` and replaced by its default so that reading continues and the user
sees every problem at once. The loader raises after everything was read.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastgw.config.errors import ErrorList, Invalid, child
from fastgw.config.schema import describe, suggestion

T = TypeVar("T")


class Section:
    def __init__(
        self,
        raw: object,
        keypath: str,
        errors: ErrorList,
        allowed: tuple[str, ...],
        *,
        hint: str = "indent its keys under it, one 'key: value' per line",
        misplaced: Mapping[str, str] | None = None,
    ) -> None:
        """`misplaced` maps keys that belong in a sub-section to its name, for a
        better hint than a spelling suggestion (`methods` -> under `match`)."""
        self.keypath = keypath
        self.errors = errors
        self.allowed = allowed
        self.misplaced = misplaced or {}
        # A key with no value (`timeouts:`) reads as null: treat it as empty.
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.add(keypath, f"expected a mapping, got {describe(raw)}", hint)
            raw = {}
        self.raw: dict[Any, Any] = raw
        self._report_unknown_keys()

    def _report_unknown_keys(self) -> None:
        for key in self.raw:
            if key in self.allowed:
                continue
            if isinstance(key, bool):
                # YAML 1.1 reads a bare on/off/yes/no key as a boolean.
                hint = ("a bare on, off, yes or no key reads as a boolean in YAML; "
                        + suggestion("", self.allowed, "allowed keys"))
            elif key in self.misplaced:
                hint = f"move it under {self.misplaced[key]}:"
            else:
                hint = suggestion(key, self.allowed, "allowed keys")
            self.errors.add(self.path(key), "unknown key", hint)

    def path(self, key: object) -> str:
        return child(self.keypath, key)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str) -> Any:
        return self.raw.get(key)

    def parse(self, key: str, parser: Callable[[Any], T], default: T) -> T:
        """The parsed value of `key`, or `default` when it is absent or invalid."""
        if not self.has(key):
            return default
        return parse_or_record(self.errors, self.path(key), parser, self.raw[key], default)

    def require(self, key: str, parser: Callable[[Any], T], default: T, hint: str) -> T:
        if not self.has(key):
            self.errors.add(self.path(key), "missing", hint)
            return default
        return self.parse(key, parser, default)

    def section(self, key: str, allowed: tuple[str, ...], **kwargs: Any) -> Section:
        return Section(self.raw.get(key), self.path(key), self.errors, allowed, **kwargs)

    def list(self, key: str, hint: str) -> list[Any]:
        """The list under `key`: [] when absent; an error, then [], when not a list."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.errors.add(self.path(key), f"expected a list, got {describe(value)}", hint)
            return []
        return value


def parse_or_record(errors: ErrorList, keypath: str, parser: Callable[[Any], T], value: object, default: T) -> T:
    try:
        return parser(value)
    except Invalid as invalid:
        errors.add_invalid(keypath, invalid)
        return default
