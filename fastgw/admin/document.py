"""The declarative config document as the admin API shows, takes and
compares it (pure functions; fastgw/admin/changes.py uses them).

`GET /config` shows the document the running config was built from
(`Config.document`: the file as parsed) with its secrets redacted
(`redact_document`); `PUT /config` takes it back, and a value still
redacted means "keep the current one" (`keep_redacted`). `diff` lists what
a change added, removed or changed, from the redacted documents only, so no
secret ever shows in the audit log.
"""
from __future__ import annotations

import copy

import orjson

from fastgw.admin.redact import REDACTED, SECRET_HEADERS, redact
from fastgw.config import yaml_text

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
HEADER_SECTIONS = ("request_headers", "response_headers")


class BadBody(Exception):
    """The body is not a document at all (400), as opposed to an invalid config (422)."""


def parse_body(body: bytes, content_type: bytes | None) -> object:
    """JSON, or YAML when the Content-Type says so."""
    kind = (content_type or b"").split(b";")[0].strip().lower().decode("latin-1")
    if kind in YAML_TYPES:
        try:
            document, duplicates = yaml_text.parse(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadBody("the body is not UTF-8 text") from None
        except yaml_text.YamlProblem as problem:
            where = f"{problem.where}: " if problem.where else ""
            raise BadBody(f"the body is not valid YAML: {where}{problem.problem} ({problem.hint})") from None
        if duplicates:
            key, line, first = duplicates[0]
            raise BadBody(f"the body is not valid YAML: line {line}: duplicate key {key!r}, first at line {first}")
        return document
    if kind not in ("", "application/json", "application/merge-patch+json"):
        raise BadBody(f"Content-Type {kind} is not taken: send application/json or application/yaml")
    if not body.strip():
        raise BadBody("the body is empty: send the config as JSON (or YAML with Content-Type: application/yaml)")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadBody(f"the body is not valid JSON: {error}") from None


def redact_document(document: object) -> object:
    """What GET /config shows of the document: values of secret-named keys,
    URL passwords and credential header values become `<redacted>`."""
    shown = redact(document, field_names=True)
    return _redact_headers(shown)


def _redact_headers(node: object) -> object:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in HEADER_SECTIONS and isinstance(value, dict):
                value = {op: ({name: (REDACTED if isinstance(name, str) and name.lower() in SECRET_HEADERS
                                      else header) for name, header in pairs.items()}
                              if op in ("add", "set") and isinstance(pairs, dict) else pairs)
                         for op, pairs in value.items()}
            out[key] = _redact_headers(value)
        return out
    if isinstance(node, list):
        return [_redact_headers(entry) for entry in node]
    return node


def keep_redacted(new: object, current: object) -> tuple[object, list[str]]:
    """`new` with every value that is redacted as GET /config shows it put
    back to the current one; and the key paths where a redacted value has no
    current value to stand for (errors)."""
    shown = redact_document(current) if current is not None else None
    problems: list[str] = []
    merged = _keep(copy.deepcopy(new), shown, current, "", problems)
    return merged, problems


def _keep(new, shown, current, path, problems):
    if isinstance(new, str) and REDACTED in new:
        if shown is not None and new == shown and shown != current:
            return copy.deepcopy(current)
        problems.append(path or "(top level)")
        return new
    if isinstance(new, dict):
        same = isinstance(shown, dict) and isinstance(current, dict)
        return {key: _keep(value, shown.get(key) if same else None, current.get(key) if same else None,
                           _child(path, key), problems)
                for key, value in new.items()}
    if isinstance(new, list):
        same = isinstance(shown, list) and isinstance(current, list) and len(shown) == len(current)
        out = []
        for index, value in enumerate(new):
            match = _counterpart(value, index, current) if same else None
            out.append(_keep(value, shown[match] if match is not None else None,
                             current[match] if match is not None else None, f"{path}[{index}]", problems))
        return out
    return new


def _counterpart(value, index: int, current: list) -> int | None:
    """The entry of `current` that `value` stands for: the one of the same
    name (routes, listeners), else the one at the same place."""
    name = value.get("name") if isinstance(value, dict) else None
    if name is not None:
        for position, entry in enumerate(current):
            if isinstance(entry, dict) and entry.get("name") == name:
                return position
        return None
    return index if index < len(current) else None


def _child(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def merge_patch(target: object, patch: object) -> object:
    """RFC 7396 JSON merge patch: mappings merge, null removes a key, any
    other value replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def diff(old: object, new: object) -> list[dict]:
    """What changed from `old` to `new`, both documents as stored (secrets
    in clear); the values shown come from their redacted forms. Entries:
    {"op": "added" | "removed" | "changed", "path", "old"?, "new"?}; list
    entries with a `name` are compared by name (`routes[api]`)."""
    out: list[dict] = []
    _diff(old, new, redact_document(old), redact_document(new), "", out)
    return out


def _diff(old, new, old_shown, new_shown, path, out):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                out.append({"op": "removed", "path": _child(path, key), "old": old_shown.get(key)})
        for key, value in new.items():
            where = _child(path, key)
            if key not in old:
                out.append({"op": "added", "path": where, "new": new_shown.get(key)})
            else:
                _diff(old[key], value, old_shown.get(key), new_shown.get(key), where, out)
        return
    if isinstance(old, list) and isinstance(new, list) and _named(old) and _named(new):
        old_by = {entry["name"]: i for i, entry in enumerate(old)}
        new_by = {entry["name"]: i for i, entry in enumerate(new)}
        for name, i in old_by.items():
            if name not in new_by:
                out.append({"op": "removed", "path": f"{path}[{name}]", "old": old_shown[i]})
        for name, i in new_by.items():
            if name not in old_by:
                out.append({"op": "added", "path": f"{path}[{name}]", "new": new_shown[i]})
            else:
                _diff(old[old_by[name]], new[i], old_shown[old_by[name]], new_shown[i], f"{path}[{name}]", out)
        if [n for n in old_by if n in new_by] != [n for n in new_by if n in old_by]:
            out.append({"op": "changed", "path": f"{path} (order)", "old": [e["name"] for e in old],
                        "new": [e["name"] for e in new]})
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, old_shown[i], new_shown[i], f"{path}[{i}]", out)
        return
    if old != new or type(old) is not type(new):
        out.append({"op": "changed", "path": path or "(top level)", "old": old_shown, "new": new_shown})


def _named(entries: list) -> bool:
    names = [entry.get("name") for entry in entries if isinstance(entry, dict)]
    return len(names) == len(entries) and None not in names and len(set(names)) == len(names)
