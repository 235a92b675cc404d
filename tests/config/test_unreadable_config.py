"""Every way a config file can be broken comes out as a ConfigError that names
the file, where in it (line and column, or the key path) and a fix (issue 17,
finding 3: a control character escaped as a PyYAML traceback)."""
from __future__ import annotations

import os

import pytest

from fastgw.config import ConfigError, load

VALID = (b"listeners:\n  - address: 127.0.0.1:27480\n"
         b"clusters:\n  a: {endpoints: [http://127.0.0.1:9]}\n"
         b"routes:\n  - {match: {prefix: /}, cluster: a}\n")


def _with_timeouts(value: bytes) -> bytes:
    return VALID.replace(b"{endpoints", b"{timeouts: {connect: " + value + b"}, endpoints")


# (name, file bytes, what the one error line must contain, in order)
BROKEN = [
    ("control char", VALID.replace(b"27480", b"27480\x01"),
     ["line 2, column 29: ", "U+0001 (a control character) is not allowed", "(remove it"]),
    ("NUL byte", VALID.replace(b"27480", b"27480\x00"), ["line 2, column 29: ", "U+0000 (NUL)"]),
    ("DEL", VALID.replace(b"clusters", b"clus\x7fters"), ["line 3, column 5: ", "U+007F (DEL)"]),
    ("escape sequence", VALID + b"# \x1b[31mred\n", ["line 7, column 3: ", "U+001B (ESC)"]),
    ("control char in a key", b"listen\x02ers: []\n", ["line 1, column 7: ", "U+0002"]),
    ("latin-1 byte", VALID + b"# caf\xe9\n", ["line 7, column 6: ", "not a UTF-8 text file: byte 0xe9",
                                              "re-save it as UTF-8"]),
    ("UTF-16", "clusters: {}\n".encode("utf-16"), ["line 1, column 1: ", "UTF-16", "save it as UTF-8"]),
    ("tab indentation", b"clusters:\n\ta: 1\n", ["line 2, column 1: ", "invalid YAML", "indentation"]),
    ("unclosed bracket", b"clusters: {a: [1\nroutes: []\n", ["invalid YAML", "(check the indentation"]),
    ("deep nesting", b"routes: " + b"[" * 5000 + b"]" * 5000 + b"\n",
     ["line 1, column 72: ", "nested more than 64 levels", "bracket left open"]),
    ("deep mappings", b"a: " + b"{a: " * 500 + b"1" + b"}" * 500 + b"\n", ["nested more than 64 levels"]),
    ("huge integer", VALID.replace(b"{endpoints", b"{pool: {max_idle: 1" + b"0" * 5000 + b"}, endpoints"),
     ["line 4, column 24: ", "has 5001 digits"]),
    ("impossible date", VALID.replace(b"{endpoints", b"{lb: 2001-02-30, endpoints"),
     ["line 4, column 11: ", "cannot read '2001-02-30' as timestamp", "quote it"]),
    ("lone surrogate", VALID.replace(b"127.0.0.1:27480", b'"127.0.0.1:27480\\ud800"'),
     ["line 2, column 14: ", "half a character"]),
    ("python tag", b"clusters: !!python/object:os.system {}\n", ["line 1, column 11: ", "could not determine a constructor"]),
    ("a list at the top", b"- a\n- b\n", ["(top level): expected a mapping at the top, got a list"]),
    ("a number at the top", b"42\n", ["(top level): expected a mapping at the top, got the number 42"]),
    ("empty", b"", ["(top level): the file is empty"]),
    ("duplicate key", VALID + b"routes: []\n", ["line 7: duplicate key 'routes', first at line 5"]),
    ("huge integer duration", _with_timeouts(b"1" + b"0" * 400),
     ["clusters.a.timeouts.connect: duration 1000", "is longer than a year", "at most 365 days"]),
    ("huge string duration", _with_timeouts(b'"1' + b"0" * 400 + b'h"'), ["is longer than a year"]),
    ("float beyond double", _with_timeouts(b"1e400"), ["clusters.a.timeouts.connect: '1e400' is not a duration"]),
    ("NaN duration", _with_timeouts(b".nan"), ["clusters.a.timeouts.connect: duration must be greater than 0, got nan"]),
    ("infinite duration", _with_timeouts(b".inf"), ["clusters.a.timeouts.connect: duration inf is longer than a year"]),
    ("huge size", b"server: {limits: {max_body_bytes: '1" + b"0" * 40 + b"'}}\n" + VALID, ["server.limits.max_body_bytes: "]),
    ("huge count", VALID.replace(b"{endpoints", b"{pool: {max_idle: 99999999999999}, endpoints"),
     ["clusters.a.pool.max_idle: must be at most 2147483647"]),
    ("superscript port", VALID.replace(b"27480", "2748\u00b2".encode()), ["listeners[0].address: port '2748²' is not a number"]),
    ("huge port", VALID.replace(b"27480", b"9" * 5000), ["listeners[0].address: port '9999", "out of range"]),
    ("too many workers", b"server: {workers: 100000}\n" + VALID, ["server.workers: must be at most 1024"]),
    ("superscript retry status", VALID.replace(b"cluster: a}", "cluster: a, retries: {retry_on: ['50³']}}".encode()),
     ["routes[0].retries.retry_on: unknown retry condition '50³'"]),
    ("key with a control char escape", VALID + b'"bad\\x01key": 1\n', [": 'bad\\x01key': unknown key"]),
    ("null key", VALID + b"~: 1\n", [": null: unknown key"]),
]


@pytest.mark.parametrize("name, content, fragments", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_file_is_a_config_error_with_a_position(tmp_path, name, content, fragments):
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    lines = [line for line in caught.value.errors if fragments[0] in line]
    assert lines, f"{fragments[0]!r} in none of {caught.value.errors}"
    line = lines[0]
    assert line.startswith(f"{path}: "), line
    position = 0
    for fragment in fragments:
        found = line.find(fragment, position)
        assert found != -1, f"{fragment!r} not in (the rest of) {line!r}"
        position = found + len(fragment)
    assert line.endswith(")"), f"no (hint) in {line!r}"
    assert len(line) < 600, f"error lines stay readable: {line!r}"


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, env={})
    assert caught.value.errors == [f"{tmp_path}: is a directory (give the path of the YAML file itself; "
                                   "start from examples/gateway.yaml)"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_bytes(VALID)
    path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.errors == [f"{path}: cannot read: permission denied (make it readable by the user "
                                   "fastgw runs as; start from examples/gateway.yaml)"]


def test_a_device_that_never_ends_is_cut_off():
    with pytest.raises(ConfigError) as caught:
        load("/dev/zero", env={})
    assert caught.value.errors == ["/dev/zero: larger than 8 MiB (is it the right file? a config of 10,000 "
                                   "routes is about 2 MiB; start from examples/gateway.yaml)"]


@pytest.mark.parametrize("key, path, expected", [
    ("endpoints_file", "eps\x00.yaml", "the path contains a NUL character"),
    ("endpoints_file", "/dev/zero", "larger than 8 MiB"),
    ("token_file", "tok\x00en", "cannot read 'tok\\x00en': embedded null byte"),
    ("token_file", "/dev/zero", "'/dev/zero' is longer than 4096 characters"),
])
def test_files_named_in_the_config_are_read_safely(tmp_path, key, path, expected):
    config = tmp_path / "gateway.yaml"
    quoted = '"' + path.replace("\x00", "\\x00") + '"'
    if key == "endpoints_file":
        config.write_bytes(VALID.replace(b"{endpoints: [http://127.0.0.1:9]}",
                                         b"{endpoints_file: " + quoted.encode() + b"}"))
    else:
        config.write_bytes(VALID + b"admin: {token_file: " + quoted.encode() + b"}\n")
    with pytest.raises(ConfigError) as caught:
        load(config, env={})
    (line,) = caught.value.errors
    assert line.startswith(f"{config}: ") and expected in line, line


def test_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID)
    assert load(path, env={}).listeners[0].port == 27480


def test_endpoints_file_with_a_control_character(tmp_path):
    (tmp_path / "eps.yaml").write_bytes(b"- http://127.0.0.1:9001\x01\n")
    path = tmp_path / "gateway.yaml"
    path.write_bytes(VALID.replace(b"{endpoints: [http://127.0.0.1:9]}", b"{endpoints_file: eps.yaml}"))
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    (line,) = caught.value.errors
    assert line.startswith(f"{path}: clusters.a.endpoints_file: {tmp_path / 'eps.yaml'}: line 1, column 24: "
                           "the character U+0001 (a control character) is not allowed"), line


# --- the real binary ----------------------------------------------------------

def test_check_reports_a_control_character_without_a_traceback(tmp_path, run_cli):
    path = tmp_path / "gateway.yaml"
    path.write_bytes(VALID.replace(b"27480", b"27480\x01"))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: line 2, column 29: the character U+0001 (a control character) is not allowed in YAML "
        "(remove it (an editor or a copy and paste may have put it there); of the control characters only tab, "
        "CR and LF may appear, and \\xNN escapes in double quotes)",
        "1 error",
    ]


@pytest.mark.parametrize("name", ["deep nesting", "huge integer", "huge integer duration", "lone surrogate",
                                  "superscript port"])
def test_check_reports_other_broken_files_without_a_traceback(tmp_path, run_cli, name):
    content = next(case[1] for case in BROKEN if case[0] == name)
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"{path}: "), result.stderr
