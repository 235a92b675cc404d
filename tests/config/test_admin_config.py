"""Config for the `admin` section and the drain/reload timeouts: defaults,
token sources, and the errors with their key paths."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.model import AdminSettings

TOKEN = "0123456789abcdef0123"


def test_defaults(write_config, minimal):
    config = load(write_config(minimal), env={})
    assert config.admin == AdminSettings(enabled=True, host="127.0.0.1", port=9901, token=None,
                                         token_source=None, required_clusters=())
    assert (config.server.drain_delay, config.server.reload_drain) == (5.0, 300.0)


def test_timeouts_and_off_switch(write_config, minimal):
    config = load(write_config(minimal + """
server: {timeouts: {drain_delay: 0, reload_drain: 2m}}
admin: {enabled: false}
"""), env={})
    assert (config.server.drain_delay, config.server.reload_drain) == (0.0, 120.0)
    assert config.admin.enabled is False


def test_token_sources(write_config, minimal, tmp_path):
    config = load(write_config(minimal + f"admin: {{address: '0.0.0.0:9000', token: {TOKEN}}}\n"), env={})
    assert (config.admin.host, config.admin.port, config.admin.token) == ("0.0.0.0", 9000, TOKEN)
    assert config.admin.token_source == "admin.token"
    assert TOKEN not in repr(config)  # never printed by accident
    secret = tmp_path / "admin-token"
    secret.write_text(TOKEN + "\n")
    config = load(write_config(minimal + f"admin: {{address: '[::]:9000', token_file: {secret}}}\n"), env={})
    assert config.admin.token == TOKEN and config.admin.token_source == f"file {secret}"
    config = load(write_config(minimal + "admin: {token_env: GW_TOKEN, required_clusters: [users]}\n"),
                  env={"GW_TOKEN": TOKEN})
    assert config.admin.token == TOKEN and config.admin.required_clusters == ("users",)


def test_beyond_loopback_needs_a_token(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "admin: {address: '0.0.0.0:9901'}\n")
    find_error(errors, source, "admin.address", "0.0.0.0:9901 is reachable beyond this host and no token is set",
               "admin.token_file")
    assert len(errors) == 1, errors
    # A host name may resolve anywhere: it needs a token too.
    source, errors = config_errors(minimal + "admin: {address: 'gateway.internal:9901'}\n")
    find_error(errors, source, "admin.address", "no token is set")


def test_each_error(config_errors, find_error, minimal, tmp_path):
    source, errors = config_errors(minimal + f"""
listeners: [{{name: public, address: 127.0.0.1:9901}}]
server: {{timeouts: {{drain_delay: soon}}}}
admin: {{enabled: yes please, token: short, token_fil: x, required_clusters: [userz, 7]}}
""")
    find_error(errors, source, "server.timeouts.drain_delay", "soon")
    find_error(errors, source, "admin.enabled", "expected true or false")
    find_error(errors, source, "admin.token", "at least 16")
    find_error(errors, source, "admin.token_fil", "unknown key", "token_file")
    find_error(errors, source, "admin.required_clusters[0]", "unknown cluster 'userz'", "did you mean 'users'?")
    find_error(errors, source, "admin.required_clusters[1]", "not a valid name")
    find_error(errors, source, "admin.address", "127.0.0.1:9901 is already used by listeners[0]")
    assert len(errors) == 7, errors


def test_token_source_errors(config_errors, find_error, minimal, tmp_path):
    source, errors = config_errors(minimal + f"admin: {{token: {TOKEN}, token_env: X}}\n")
    find_error(errors, source, "admin.token_env", "token and token_env are both set")
    source, errors = config_errors(minimal + f"admin: {{token_file: {tmp_path / 'missing'}}}\n")
    find_error(errors, source, "admin.token_file", "cannot read", "No such file")
    source, errors = config_errors(minimal + "admin: {token_env: NOT_SET_ANYWHERE}\n")
    find_error(errors, source, "admin.token_env", "NOT_SET_ANYWHERE is not set or empty")


def test_env_admin_moves_or_turns_off(write_config, minimal, config_errors, find_error):
    path = write_config(minimal)
    assert load(path, env={"FASTGW_ADMIN": "off"}).admin.enabled is False
    moved = load(path, env={"FASTGW_ADMIN": "127.0.0.1:7000"}).admin
    assert (moved.enabled, moved.host, moved.port) == (True, "127.0.0.1", 7000)
    source, errors = config_errors(minimal, env={"FASTGW_ADMIN": "0.0.0.0:7000"})
    find_error(errors, source, "env FASTGW_ADMIN", "reachable beyond this host and no token is set")
    source, errors = config_errors(minimal, env={"FASTGW_ADMIN": "nowhere"})
    find_error(errors, source, "env FASTGW_ADMIN", "has no port")
