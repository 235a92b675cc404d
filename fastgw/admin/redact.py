"""Secrets out of what the admin API shows.

`GET /config` returns the running config; it must never return a secret:
the admin token, passwords in URLs (`redis://user:secret@host`), values of
keys that name a secret (`password`, `token`, ...), and the values of
credential headers a route sets or adds toward its upstream (a route may
inject `Authorization: Bearer ...`).
"""
from __future__ import annotations

import re

REDACTED = "<redacted>"
SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential", "private_key")
# Header names whose values are credentials.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                            "api-key", "x-auth-token"})
# scheme://user:password@host -> scheme://user:<redacted>@host
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")


def is_secret_key(key: str) -> bool:
    """A field name that holds a secret (`password`, `redis_password`,
    `token`); not one that only says where it comes from (`token_source`)."""
    lowered = key.lower()
    if lowered.endswith(("_source", "_file", "_env")):
        return False
    return any(lowered == word or lowered.endswith("_" + word) for word in SECRET_KEY_WORDS)


def redact_text(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)


def redact(value, field_names: bool = False):
    """A JSON-ready structure with passwords in URLs replaced by
    `<redacted>`; with `field_names`, also the value of every key that names
    a secret (only for keys that are field names, not user-chosen names such
    as a cluster called `token-service`)."""
    if isinstance(value, dict):
        return {key: (REDACTED if field_names and isinstance(key, str) and is_secret_key(key)
                      and item not in (None, "", [], {}) else redact(item, field_names))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, field_names) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_header_pairs(pairs) -> list[list[str]]:
    """[(name, value)] as bytes -> [[name, value or <redacted>]] as text."""
    out = []
    for name, value in pairs:
        text = name.decode("latin-1")
        out.append([text, REDACTED if text.lower() in SECRET_HEADERS else value.decode("latin-1")])
    return out
