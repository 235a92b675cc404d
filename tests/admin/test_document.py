"""The declarative document as the admin API shows, takes and compares it
(fastgw/admin/document.py): redaction, "<redacted> keeps the current
value", merge patches and diffs that never show a secret."""
from __future__ import annotations

import json
import os

import pytest

from fastgw.admin.control import Busy, Control
from fastgw.admin.document import BadBody, diff, keep_redacted, merge_patch, parse_body, redact_document

CURRENT = {
    "redis": {"url": "redis://app:pw-1@127.0.0.1:6379"},
    "admin": {"token": "admin-token-0123456789", "token_file": None},
    "clusters": {"main": {"endpoints": ["http://127.0.0.1:9000"]}},
    "routes": [
        {"name": "a", "cluster": "main", "request_headers": {"set": {"Authorization": "Bearer s-1", "X-Id": "7"}}},
        {"name": "b", "cluster": "main"},
    ],
}


def test_redaction_hides_every_secret_and_nothing_else():
    shown = redact_document(CURRENT)
    text = json.dumps(shown)
    for secret in ("pw-1", "admin-token-0123456789", "Bearer s-1"):
        assert secret not in text
    assert shown["redis"]["url"] == "redis://app:<redacted>@127.0.0.1:6379"
    assert shown["routes"][0]["request_headers"]["set"] == {"Authorization": "<redacted>", "X-Id": "7"}
    assert shown["clusters"] == CURRENT["clusters"]


def test_redacted_values_keep_the_current_ones_even_when_routes_move():
    new = redact_document(CURRENT)
    new["routes"].reverse()  # matched by name, not by place
    new["routes"].insert(0, {"name": "c", "cluster": "main"})
    merged, problems = keep_redacted(new, CURRENT)
    assert problems == []
    assert merged["redis"] == CURRENT["redis"] and merged["admin"] == CURRENT["admin"]
    assert merged["routes"][2] == CURRENT["routes"][0]


def test_a_redacted_value_with_nothing_to_keep_is_a_problem():
    new = redact_document(CURRENT)
    new["routes"].append({"name": "new", "cluster": "main",
                          "request_headers": {"set": {"Authorization": "<redacted>"}}})
    new["redis"]["url"] = "redis://other:<redacted>@127.0.0.1:6379"  # not what is shown: no current value
    _, problems = keep_redacted(new, CURRENT)
    assert problems == ["redis.url", "routes[2].request_headers.set.Authorization"]


def test_diff_names_paths_and_never_shows_a_secret():
    new = json.loads(json.dumps(CURRENT))
    new["redis"]["url"] = "redis://app:pw-2@127.0.0.1:6379"
    new["routes"][1]["cluster"] = "other"
    del new["admin"]["token_file"]
    new["routes"].append({"name": "c", "cluster": "main"})
    changes = diff(CURRENT, new)
    assert {"op": "changed", "path": "redis.url", "old": "redis://app:<redacted>@127.0.0.1:6379",
            "new": "redis://app:<redacted>@127.0.0.1:6379"} in changes
    assert {"op": "changed", "path": "routes[b].cluster", "old": "main", "new": "other"} in changes
    assert {"op": "removed", "path": "admin.token_file", "old": None} in changes
    assert {"op": "added", "path": "routes[c]", "new": {"name": "c", "cluster": "main"}} in changes
    assert len(changes) == 4 and "pw-" not in json.dumps(changes)
    assert diff(CURRENT, json.loads(json.dumps(CURRENT))) == []


def test_merge_patch_follows_rfc_7396():
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == \
        {"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}


def test_bodies():
    assert parse_body(b'{"a": 1}', None) == {"a": 1}
    assert parse_body(b"a: 1\n", b"application/yaml; charset=utf-8") == {"a": 1}
    for body, kind in ((b"{", b"application/json"), (b"", None), (b"a: 1\na: 2\n", b"text/yaml"),
                       (b"a=1", b"application/x-www-form-urlencoded")):
        with pytest.raises(BadBody):
            parse_body(body, kind)


def test_the_audit_ring_keeps_the_last_entries(tmp_path):
    (tmp_path / "control").mkdir()
    control = Control(str(tmp_path / "control"), entries=3)
    for number in range(5):
        control.append_audit({"who": "anonymous", "n": number, "diff": []})
    total, entries = control.audit()
    assert total == 5 and [e["n"] for e in entries] == [2, 3, 4] and [e["id"] for e in entries] == [3, 4, 5]
    assert [e["n"] for e in control.audit(limit=1)[1]] == [4]
    big = control.append_audit({"who": "x", "diff": [{"op": "added", "path": "p", "new": "v" * 1000}] * 100})
    assert big["diff_truncated"] > 0 and len(big["diff"]) < 100
    change = control.put_pending({"routes": []})
    assert control.take_pending() == {"id": change, "document": {"routes": []}} and control.take_pending() is None
    lock = control.try_lock()
    with pytest.raises(Busy):
        control.try_lock()
    os.close(lock)
    os.close(control.try_lock())
