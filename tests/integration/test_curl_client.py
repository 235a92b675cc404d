"""Item 14: curl as a client, for the happy paths."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from support import MiB, payload_sha256

CURL = shutil.which("curl")


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    assert CURL, "curl is not installed (scripts/test.sh installs it)"
    cmd = [CURL, "--silent", "--show-error", "--noproxy", "*", "--max-time", "20", *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


@pytest.mark.timeout(60)
def test_curl_post_and_keepalive(proxy):
    out = curl("--http1.1", "-H", "X-Test: curl", "--data-binary", "hello from curl",
               "--write-out", "\n%{http_code} %{num_connects}\n",
               f"{proxy.gw.url}/echo/curl?x=1",
               "--next", "--write-out", "\n%{http_code} %{num_connects}\n",
               f"{proxy.gw.url}/fixed")
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    first, rest = text.split("\n", 1)
    doc = json.loads(first)
    assert doc["method"] == "POST"
    assert doc["target"] == "/echo/curl?x=1"
    assert doc["body"] == "hello from curl"
    assert ["X-Test", "curl"] in doc["headers"] or ["x-test", "curl"] in doc["headers"]
    lines = rest.strip().splitlines()
    assert lines[0] == "200 1"
    assert lines[-1] == "200 0", f"curl did not reuse the connection: {lines}"
    assert "hello from upstream" in rest


@pytest.mark.timeout(60)
def test_curl_download_chunked(proxy, tmp_path):
    target = tmp_path / "big.bin"
    out = curl("--http1.1", "-o", str(target), "--write-out", "%{http_code}",
               f"{proxy.gw.url}/big?mib=5&mode=chunked&seed=4")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "200"
    data = target.read_bytes()
    assert len(data) == 5 * MiB
    assert hashlib.sha256(data).hexdigest() == payload_sha256(5 * MiB, 4)
