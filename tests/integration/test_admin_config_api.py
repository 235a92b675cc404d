"""Config changes through the admin API on the real binary: PUT /config
(round trip of the GET /config answer, a new route on every worker, refused
documents that change nothing, redacted secrets kept, persisted to a file
`fastgw check` accepts), PATCH of one route or cluster, the audit log, and
who may change the config."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from support import cluster, http_request, route, simple_config

TOKEN = "test-admin-token-0123456789abcdef"
UPSTREAM_SECRET = "Bearer upstream-secret-4242"


def admin(gw, method: str, path: str, body=None, token: str | None = TOKEN, content_type="application/json"):
    headers = [("Authorization", f"Bearer {token}")] if token else []
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.append(("Content-Type", content_type))
    return http_request(gw.admin_port, method, path, headers, data, timeout=40.0)


def token_config(upstream_url: str, **admin_extra) -> dict:
    config = simple_config(upstream_url)
    config["admin"] = {"token": TOKEN, **admin_extra}
    return config


def generation(gw) -> int:
    return admin(gw, "GET", "/config").json()["generation"]


def audit(gw) -> list[dict]:
    resp = admin(gw, "GET", "/audit")
    assert resp.status == 200, resp.describe()
    return resp.json()["entries"]


@pytest.mark.timeout(60)
def test_put_of_the_get_config_answer_round_trips(upstream, gateway_factory):
    gw = gateway_factory(token_config(upstream.url))
    before = admin(gw, "GET", "/config").json()
    assert before["generation"] == 1
    assert before["document"]["admin"]["token"] == "<redacted>"  # the inline token is kept, not shown

    resp = admin(gw, "PUT", "/config", before)
    assert resp.status == 200, resp.describe()
    assert resp.json()["generation"] == 2 and resp.json()["diff"] == []
    after = admin(gw, "GET", "/config").json()
    assert after["generation"] == 2
    assert after["document"] == before["document"] and after["config"] == before["config"]
    assert http_request(gw.port, "GET", "/fixed").status == 200
    # The same as YAML.
    resp = admin(gw, "PUT", "/config", yaml.safe_dump(before["document"]).encode(), content_type="application/yaml")
    assert resp.status == 200 and resp.json()["generation"] == 3 and resp.json()["diff"] == [], resp.describe()
    # The token was kept: the old one still opens the admin API, nothing else does.
    assert admin(gw, "GET", "/config", token=None).status == 401

    entries = audit(gw)
    assert len(entries) == 2 and entries[1]["generation"] == 3
    entry = entries[0]
    assert entry["result"] == "accepted" and entry["action"] == "PUT /config" and entry["generation"] == 2
    assert entry["who"].startswith("token:sha256:") and TOKEN not in json.dumps(entry)
    assert entry["diff"] == [] and entry["time"].endswith("Z")


@pytest.mark.timeout(90)
def test_a_route_added_by_put_serves_on_every_worker(upstream, gateway_factory):
    gw = gateway_factory(token_config(upstream.url), workers=2)
    assert http_request(gw.port, "GET", "/extra/x").header("x-route") is None
    document = admin(gw, "GET", "/config").json()["document"]
    document["routes"].insert(0, route("extra", "main", prefix="/extra",
                                       response_headers={"set": {"X-Route": "extra"}}))
    resp = admin(gw, "PUT", "/config", document)
    assert resp.status == 200, resp.describe()
    assert resp.json()["generation"] == 2
    assert {"op": "added", "path": "routes[extra]", "new": document["routes"][0]} in resp.json()["diff"]

    # Both workers of the new generation run it: every process answering
    # is of generation 2, and there are two of them.
    clusters = admin(gw, "GET", "/clusters").json()
    assert clusters["generation"] == 2 and clusters["workers"] == 2
    pids = set()
    for _ in range(400):
        live = http_request(gw.admin_port, "GET", "/livez").json()
        assert live["generation"] == 2
        pids.add(live["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2 and pids <= set(gw.children())
    for _ in range(20):  # fresh connections: whichever worker takes each, the route is there
        resp = http_request(gw.port, "GET", "/extra/x")
        assert resp.status == 200 and resp.header("x-route") == "extra", resp.describe()
    assert http_request(gw.port, "GET", "/other").header("x-route") is None


@pytest.mark.timeout(90)
def test_refused_changes_change_nothing_and_are_audited(upstream, gateway_factory, tmp_path):
    audit_file = tmp_path / "audit.jsonl"
    gw = gateway_factory(token_config(upstream.url, audit_log=str(audit_file)), workers=2)
    before = admin(gw, "GET", "/config").json()
    document = before["document"]

    unknown_key = json.loads(json.dumps(document))
    unknown_key["routes"][0]["clustr"] = "main"
    wrong_type = json.loads(json.dumps(document))
    wrong_type["server"]["workers"] = "many"
    unknown_cluster = json.loads(json.dumps(document))
    unknown_cluster["routes"][0]["cluster"] = "nope"
    cases = [
        (unknown_key, "routes[0].clustr: unknown key"),
        (wrong_type, "server.workers:"),
        (unknown_cluster, "routes[0].cluster: unknown cluster 'nope'"),
    ]
    for bad, message in cases:
        resp = admin(gw, "PUT", "/config", bad)
        assert resp.status == 422, resp.describe()
        error = resp.json()["error"]
        assert error["code"] == "invalid_config"
        assert any(line.startswith("PUT /config: ") and message in line for line in error["errors"]), error
        assert all("(" in line and line.endswith(")") for line in error["errors"])  # each names its fix
    resp = admin(gw, "PUT", "/config", b"{not json")
    assert resp.status == 400 and resp.json()["error"]["code"] == "bad_body", resp.describe()
    resp = admin(gw, "PUT", "/config", b"routes: [\n", content_type="application/yaml")
    assert resp.status == 400 and "not valid YAML" in resp.json()["error"]["message"], resp.describe()
    # Without the token: refused before anything is read.
    resp = admin(gw, "PUT", "/config", document, token=None)
    assert resp.status == 401 and resp.json()["error"]["code"] == "unauthorized"
    resp = admin(gw, "PATCH", "/config/routes/all", {"cluster": "main"}, token="wrong-token-wrong-token")
    assert resp.status == 401

    after = admin(gw, "GET", "/config").json()
    assert after == before  # same generation, same config
    metrics = admin(gw, "GET", "/metrics").body.decode()
    assert 'fastgw_config_reloads_total{result="ok"} 0' in metrics  # no reload was even tried
    assert 'fastgw_config_reloads_total{result="failed"} 0' in metrics
    assert http_request(gw.port, "GET", "/fixed").status == 200

    entries = audit(gw)
    assert [e["result"] for e in entries] == ["refused"] * 5
    assert [e["code"] for e in entries] == ["invalid_config"] * 3 + ["bad_body"] * 2
    assert "unknown cluster 'nope'" in " ".join(entries[2]["errors"])
    assert all(e["generation"] == 1 for e in entries)
    # And accepted, to the file as well.
    document["routes"][0]["response_headers"] = {"set": {"X-V": "2"}}
    assert admin(gw, "PUT", "/config", document).status == 200
    lines = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [line["result"] for line in lines] == ["refused"] * 5 + ["accepted"]
    assert lines[-1]["generation"] == 2 and lines[-1]["diff"] == [
        {"op": "added", "path": "routes[all].response_headers", "new": {"set": {"X-V": "2"}}}]
    assert lines == audit(gw)  # the ring, read through another worker or not, holds the same


@pytest.mark.timeout(60)
def test_redacted_secrets_are_kept(upstream, gateway_factory):
    config = token_config(upstream.url)
    config["routes"][0]["request_headers"] = {"set": {"Authorization": UPSTREAM_SECRET}}
    gw = gateway_factory(config)
    shown = admin(gw, "GET", "/config")
    assert UPSTREAM_SECRET not in shown.body.decode()
    document = shown.json()["document"]
    assert document["routes"][0]["request_headers"]["set"]["Authorization"] == "<redacted>"

    document["routes"][0]["response_headers"] = {"set": {"X-V": "2"}}
    resp = admin(gw, "PUT", "/config", document)
    assert resp.status == 200, resp.describe()
    assert UPSTREAM_SECRET not in resp.body.decode()
    served = http_request(gw.port, "GET", "/kept")
    assert served.header("x-v") == "2"
    assert upstream.requests[-1].header("authorization") == UPSTREAM_SECRET  # the secret kept
    assert UPSTREAM_SECRET not in admin(gw, "GET", "/audit").body.decode()

    # A redacted value where there is none to keep is an error, not the text "<redacted>".
    document["clusters"]["main"]["endpoints"][0]["url"] = "<redacted>"
    resp = admin(gw, "PUT", "/config", document)
    assert resp.status == 422, resp.describe()
    assert any("clusters.main.endpoints[0].url: <redacted> keeps the current value" in line
               for line in resp.json()["error"]["errors"])
    # A changed secret shows as changed, never in clear.
    document["clusters"]["main"]["endpoints"][0]["url"] = upstream.url
    document["routes"][0]["request_headers"]["set"]["Authorization"] = "Bearer another-secret-77"
    resp = admin(gw, "PUT", "/config", document)
    assert resp.status == 200, resp.describe()
    assert "another-secret-77" not in resp.body.decode() + admin(gw, "GET", "/audit").body.decode()
    http_request(gw.port, "GET", "/changed")
    assert upstream.requests[-1].header("authorization") == "Bearer another-secret-77"


@pytest.mark.timeout(60)
def test_patch_one_route_and_one_cluster(upstream, upstream_factory, gateway_factory):
    other = upstream_factory("other")
    config = token_config(upstream.url)
    config["clusters"]["spare"] = cluster(other.url)
    gw = gateway_factory(config)

    resp = admin(gw, "PATCH", "/config/routes/all", {"response_headers": {"set": {"X-Patched": "yes"}}})
    assert resp.status == 200, resp.describe()
    assert resp.json()["generation"] == 2
    served = http_request(gw.port, "GET", "/p")
    assert served.header("x-patched") == "yes"

    resp = admin(gw, "PATCH", "/config/routes/all", {"cluster": "spare", "response_headers": None})
    assert resp.status == 200, resp.describe()
    before = len(other.requests)
    served = http_request(gw.port, "GET", "/p")
    assert served.status == 200 and served.header("x-patched") is None
    assert len(other.requests) == before + 1

    resp = admin(gw, "PATCH", "/config/clusters/spare", {"timeouts": {"connect": "2s"}})
    assert resp.status == 200, resp.describe()
    shown = admin(gw, "GET", "/config").json()
    assert shown["generation"] == 4
    assert shown["config"]["clusters"]["spare"]["timeouts"]["connect"] == 2.0

    resp = admin(gw, "PATCH", "/config/clusters/spare", {"lb": "fastest"})
    assert resp.status == 422 and any("clusters.spare.lb" in line for line in resp.json()["error"]["errors"])
    resp = admin(gw, "PATCH", "/config/routes/nope", {"cluster": "main"})
    assert resp.status == 404 and resp.json()["error"]["code"] == "not_found"
    assert generation(gw) == 4
    assert [e["action"] for e in audit(gw)] == ["PATCH /config/routes/all"] * 2 + ["PATCH /config/clusters/spare"] * 2 \
        + ["PATCH /config/routes/nope"]


@pytest.mark.timeout(60)
def test_persist_writes_a_file_fastgw_check_accepts(upstream, gateway_factory):
    gw = gateway_factory(token_config(upstream.url))
    document = admin(gw, "GET", "/config").json()["document"]
    document["routes"].insert(0, route("saved", "main", prefix="/saved",
                                       response_headers={"set": {"X-Route": "saved"}}))
    resp = admin(gw, "PUT", "/config?persist=true", document)
    assert resp.status == 200, resp.describe()
    assert resp.json()["persisted"] == str(gw.config_path)
    written = yaml.safe_load(gw.config_path.read_text())
    assert written["routes"][0]["name"] == "saved"
    assert written["admin"]["token"] == TOKEN  # the real value, as the file had it
    assert not list(gw.config_path.parent.glob("*.tmp"))
    check = subprocess.run([sys.executable, "-m", "fastgw", "check", "--config", str(gw.config_path)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    # A reload from the file keeps the change.
    assert admin(gw, "POST", "/reload").json()["generation"] == 3
    assert http_request(gw.port, "GET", "/saved").header("x-route") == "saved"


@pytest.mark.timeout(60)
def test_changes_without_a_token(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url))
    document = admin(gw, "GET", "/config", token=None).json()["document"]
    resp = admin(gw, "PUT", "/config", document, token=None)
    assert resp.status == 403 and resp.json()["error"]["code"] == "token_required", resp.describe()
    assert generation(gw) == 1

    config = simple_config(upstream.url)
    config["admin"] = {"allow_anonymous_changes": True}
    gw2 = gateway_factory(config)
    document = admin(gw2, "GET", "/config", token=None).json()["document"]
    resp = admin(gw2, "PUT", "/config", document, token=None)
    assert resp.status == 200, resp.describe()
    assert audit(gw2)[-1]["who"] == "anonymous"
