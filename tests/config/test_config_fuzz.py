"""Property: whatever a config file holds, checking it (what `fastgw check` and
a reload do: load, then build the route table) either succeeds or raises
ConfigError, every line of which names the file (issue 17).

Four generators: random bytes; random documents shaped like the schema (its
key names at every level, values of every YAML type, including the ones
parsers trip on: huge numbers, NaN, dates, control characters); the example
config with a few of its values replaced, keys renamed or dropped; and the
example's text with bytes inserted, deleted or replaced.

Bounded for CI (about 20 s on a busy 2-core machine). For more examples:
FASTGW_FUZZ_EXAMPLES=20000 (per test), or scripts/fuzz-config.sh.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgw.config
from fastgw.cli import _check_router_accepts
from fastgw.config import ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"
EXAMPLE_TEXT = EXAMPLE.read_bytes()
EXAMPLE_DOC = yaml.safe_load(EXAMPLE_TEXT)
# Keys the example leaves commented out, so that mutations reach them too.
EXTRA_DOC = {
    "clusters": {
        "ring": {"lb": "ring_hash", "hash_on": "header:X-User", "endpoints": ["http://127.0.0.1:9004"],
                 "circuit_breaker": {"failure_ratio": 0.5, "window": 20, "min_requests": 10}},
        "by-dns": {"dns": {"name": "localhost", "port": 9005, "interval": "30s"}},
        "by-file": {"endpoints_file": {"path": "eps.yaml", "interval": "1s"}},
    },
    "routes": [{"name": "redis-limited", "match": {"path": "/r/{id}", "methods": ["GET"]}, "cluster": "ring",
                "rate_limits": [{"key": "client_ip+header:X-Tenant", "rate": "10/s", "scope": "redis"}],
                "retries": {"attempts": 1, "per_try_timeout": "2s", "retry_on": ["timeout", 503]}},
               {"match": {"prefix": "/off"}, "cluster": "ring", "retries": "off"}],
    "access_log": {"path": "stdout", "sampling": 0.5, "flush_interval": "1s", "headers": ["user-agent"],
                   "redact_headers": ["cookie"], "redact_query": ["token"]},
    "tracing": {"propagate": True, "export": {"endpoint": "http://127.0.0.1:4318/v1/traces",
                                              "service_name": "fastgw", "flush_interval": "1s"}},
    "admin": {"token": "0123456789abcdef0123", "required_clusters": ["users"]},
}
EXAMPLES = int(os.environ.get("FASTGW_FUZZ_EXAMPLES", "0")) or None


def _schema_keys() -> list[str]:
    """Every key name the readers know: the `*_KEYS` tuples of fastgw/config/."""
    keys: set[str] = set()
    for info in pkgutil.iter_modules(fastgw.config.__path__):
        module = importlib.import_module(f"fastgw.config.{info.name}")
        for name, value in vars(module).items():
            if name.endswith("_KEYS") and isinstance(value, tuple):
                keys.update(k for k in value if isinstance(k, str))
    return sorted(keys)


SCHEMA_KEYS = _schema_keys()

# Values the parsers have special cases for, and their near misses.
TRICKY = [
    "5s", "500ms", "2m", "1h", "0", "0s", "-1s", "1e400", "nan", "inf", ".5", "5 s", "5x", "365d",
    "16k", "10m", "10MiB", "10ib", "1024g", "99999999999999999999g", "auto", "0", "1" + "0" * 40,
    "http://127.0.0.1:9001", "http://[::1]:80", "https://x", "http://a:0", "http://u:p@a:1", "http://a:1/p",
    "127.0.0.1:8080", "[::1]:9901", "0.0.0.0:1", "localhost:65536", "a:²", "[::1", "::1:80",
    "/api", "/users/{id}", "/{a}/{a}", "/x/{1}", "/v{x}", "/a/../b", "/caf\u00e9", "api", "",
    "*.example.com", "*", "a.*.b", "ſ.example.com", "\u212a.com", "host:80",
    "header:X-User", "cookie:s", "client_ip", "route", "client_ip+client_ip", "header:", "+",
    "100/s", "0.5/s", "1000/h", "1/d", "0/s", "1e9/s", "token_bucket", "sliding_window", "redis", "local",
    "round_robin", "least_request", "p2c", "ring_hash", "GET", "get", "GTE", "P T", "CONNECT",
    "open", "closed", "off", "on", "yes", "200-399", "399-200", "600", "50%", "101%", "²", "٣", "50³",
    "redis://:pw@127.0.0.1:6379/0", "redis://a/99", "redis://a/1?db=2", "unix:///run/r.sock?db=1",
    "unix://host/x", "rediss://a", "stdout", "/dev/null", "/dev/zero", "eps.yaml", "/", "x\x00y", "a\r\nb: c",
    "\ufeff",
]
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63, 10**30, 10**400, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), NUMBERS, st.sampled_from(TRICKY), st.text(max_size=30),
    st.dates(), st.binary(max_size=8),
)
KEYS = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=12), st.integers(), st.booleans(), st.none())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)
SCHEMA_SHAPED = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(SCHEMA_KEYS), inner, max_size=5)),
    max_leaves=40)


def _dump(document: object) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode("utf-8")


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "eps.yaml").write_text("[http://127.0.0.1:9006]\n")
    return directory / "gateway.yaml"


def check_only_config_errors(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        _check_router_accepts(load(path, env={}))
    except ConfigError as error:
        assert error.errors, "a ConfigError without a line"
        for line in error.errors:
            assert line.startswith(f"{path}: "), f"an error line without the file name: {line!r}"
        # What the admin API answers (JSON) and the CLI prints (UTF-8) must encode.
        orjson.dumps({"errors": error.errors})
        str(error).encode("utf-8")


def fuzz(default_examples: int) -> settings:
    return settings(max_examples=EXAMPLES or default_examples, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@fuzz(150)
@given(content=st.binary(max_size=600))
def test_random_bytes(config_path, content):
    check_only_config_errors(config_path, content)


@fuzz(100)
@given(top=st.dictionaries(st.sampled_from(fastgw.config.sections.TOP_LEVEL_KEYS), SCHEMA_SHAPED, max_size=6))
def test_documents_shaped_like_the_schema(config_path, top):
    check_only_config_errors(config_path, _dump(top))


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a document: mapping keys and list indexes leading to it."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _merged_example() -> dict:
    document = yaml.safe_load(EXAMPLE_TEXT)
    for key, value in EXTRA_DOC.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key].update(value)
        elif isinstance(value, list):
            document[key] = document.get(key, []) + value
        else:
            document[key] = value
    return document


MERGED_PATHS = _paths(_merged_example())
MUTATIONS = st.lists(st.tuples(st.sampled_from(MERGED_PATHS), st.sampled_from(["replace", "drop", "rename"]),
                               VALUES, KEYS), min_size=1, max_size=3)


@fuzz(200)
@given(mutations=MUTATIONS)
def test_the_example_with_values_replaced(config_path, mutations):
    document = _merged_example()
    for path, action, value, new_key in mutations:
        parent = document
        for step in path[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                break  # an earlier mutation removed or replaced it
        else:
            last = path[-1]
            in_list = isinstance(parent, list) and isinstance(last, int) and last < len(parent)
            if in_list or isinstance(parent, dict) and last in parent:
                if action == "replace":
                    parent[last] = value
                elif action == "drop":
                    del parent[last]
                elif isinstance(parent, dict):
                    parent[new_key] = parent.pop(last)
    check_only_config_errors(config_path, _dump(document))


BYTE_EDITS = st.lists(st.tuples(st.integers(min_value=0, max_value=len(EXAMPLE_TEXT)),
                                st.sampled_from(["insert", "delete", "replace", "duplicate-line"]),
                                st.binary(min_size=1, max_size=6) | st.sampled_from(
                                    [b"\x01", b"\x00", b"\t", b"\xff", b"\xe9", b"\r", b"[", b"{", b": ", b"&a",
                                     b"*a", b"!!binary ", b"<<: ", b"'", b'"\\x01"', b"- "])),
                      min_size=1, max_size=4)


@fuzz(150)
@given(edits=BYTE_EDITS)
def test_the_example_with_bytes_changed(config_path, edits):
    text = bytearray(EXAMPLE_TEXT)
    for position, action, data in edits:
        position = min(position, len(text))
        if action == "insert":
            text[position:position] = data
        elif action == "delete":
            del text[position:position + len(data)]
        elif action == "replace":
            text[position:position + len(data)] = data
        else:
            start = text.rfind(b"\n", 0, position) + 1
            end = text.find(b"\n", position)
            end = len(text) if end == -1 else end + 1
            text[start:start] = text[start:end]
    check_only_config_errors(config_path, bytes(text))
