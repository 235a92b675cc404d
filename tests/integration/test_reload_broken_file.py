"""A reload of a file broken below the YAML level (a control character, bytes
that aren't UTF-8, nesting beyond the bound, an integer of 5,000 digits) is
refused as 400 invalid_config naming the file and the position, not as a
500 reload_failed, and the running config keeps serving (issue 17, finding 3)."""
from __future__ import annotations

import signal

import pytest

from support import cluster, http_request, route, wait_until


def admin(gw, method: str, path: str):
    return http_request(gw.admin_port, method, path, timeout=40.0)


def serving(upstream_url: str) -> dict:
    return {"clusters": {"main": cluster(upstream_url)},
            "routes": [route("all", "main", prefix="/", response_headers={"set": {"X-Config": "v0"}})]}


@pytest.mark.timeout(60)
def test_broken_bytes_are_refused_as_invalid_config_and_the_gateway_keeps_serving(upstream, gateway_factory):
    gw = gateway_factory(serving(upstream.url), workers=1)
    workers = gw.wait_children(1)
    good = gw.config_path.read_bytes()
    port_text = str(gw.port).encode()
    assert good.count(port_text) == 1, good
    source = str(gw.config_path)
    listener_line = next(n for n, line in enumerate(good.splitlines(), 1) if port_text in line)

    broken = {
        "control character": (good.replace(port_text, port_text + b"\x01"),
                              f"{source}: line {listener_line}, column ",
                              "the character U+0001 (a control character) is not allowed"),
        "latin-1 byte": (good + b"# caf\xe9\n", f"{source}: line ", "not a UTF-8 text file: byte 0xe9"),
        "deep nesting": (good + b"x: " + b"[" * 3000 + b"]" * 3000 + b"\n", f"{source}: line ",
                         "nested more than 64 levels"),
        "huge integer": (good + b"x: 1" + b"0" * 5000 + b"\n", f"{source}: line ", "has 5001 digits"),
    }
    for name, (content, start, fragment) in broken.items():
        gw.config_path.write_bytes(content)
        resp = admin(gw, "POST", "/reload")
        assert resp.status == 400, f"{name}: {resp.describe()}"
        error = resp.json()["error"]
        assert error["code"] == "invalid_config" and error["generation"] == 1, (name, error)
        (line,) = error["errors"]
        assert line.startswith(start) and fragment in line, (name, line)
        served = http_request(gw.port, "GET", "/still")
        assert served.status == 200 and served.header("x-config") == "v0", (name, served.describe())

    # SIGHUP takes the same path: logged as the config error, nothing changes.
    gw.config_path.write_bytes(broken["control character"][0])
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: gw.stderr().count("keeps serving the previous config") == len(broken) + 1, 10), \
        gw.stderr()
    outcomes = [line for line in gw.stderr().splitlines() if "reload failed (" in line]
    assert all("reload failed (invalid_config)" in line for line in outcomes), outcomes
    assert "Traceback" not in gw.stderr()
    assert http_request(gw.port, "GET", "/still").header("x-config") == "v0"
    assert gw.children() == workers, "a refused reload must not touch the running workers"

    gw.config_path.write_bytes(good)
    resp = admin(gw, "POST", "/reload")
    assert resp.status == 200, resp.describe()
