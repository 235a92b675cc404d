"""One test per kind of config error: the file, the exact key path and a hint.

Every error line must read `{file}: {keypath}: {problem} ({hint})`; the
`find_error` fixture checks that shape and that exactly one line names the key.
"""
from __future__ import annotations

import pytest

from fastgw.config import ConfigError, from_command_line, load

CLUSTERS = """
clusters:
  users:
    endpoints: [http://127.0.0.1:9001]
"""


def routes_config(routes_yaml: str) -> str:
    """A config with one valid cluster `users` and the given routes section."""
    return CLUSTERS + "routes:\n" + routes_yaml


# --- unknown keys ----------------------------------------------------------

def test_unknown_top_level_key_suggests_the_close_one(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "listners:\n  - address: 127.0.0.1:8080\n")
    find_error(errors, source, "listners", "unknown key", "did you mean 'listeners'?")


def test_unknown_nested_key_has_the_full_key_path(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {paht: /x}\n    cluster: users\n"))
    find_error(errors, source, "routes[0].match.paht", "unknown key", "did you mean 'path'?")


def test_unknown_key_without_close_match_lists_allowed_keys(config_errors, find_error, minimal):
    source, errors = config_errors(minimal.replace("users:\n", "users:\n    zzz: 1\n", 1))
    from fastgw.config.sections import CLUSTER_KEYS

    find_error(errors, source, "clusters.users.zzz", "unknown key",
               "allowed keys: " + ", ".join(sorted(CLUSTER_KEYS)))


def test_key_at_the_wrong_level_says_where_it_belongs(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {path: /x}\n    methods: [GET]\n    cluster: users\n"))
    find_error(errors, source, "routes[0].methods", "unknown key", "move it under match:")


# --- types and numbers -----------------------------------------------------

def test_workers_must_be_a_number_or_auto(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "server:\n  workers: \"x\"\n")
    find_error(errors, source, "server.workers", "expected a number or 'auto', got 'x'", "'auto' for one per CPU core")


def test_endpoint_weight_must_be_at_least_one(config_errors, find_error):
    source, errors = config_errors("""
        clusters:
          users:
            endpoints:
              - url: http://127.0.0.1:9001
                weight: -1
        routes:
          - {match: {prefix: /}, cluster: users}
        """)
    find_error(errors, source, "clusters.users.endpoints[0].weight", "must be 1 or more, got -1", "e.g. 2")


def test_methods_must_be_a_list(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {path: /x, methods: GET}\n    cluster: users\n"))
    find_error(errors, source, "routes[0].match.methods", "expected a list, got the string 'GET'", "methods: [GET]")


def test_method_must_be_a_token(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {path: /x, methods: [GET, \"P T\"]}\n    cluster: users\n"))
    find_error(errors, source, "routes[0].match.methods[1]", "'P T' is not an HTTP method", "e.g. [GET, POST]")


def test_misspelt_method_suggests_the_close_one(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {path: /x, methods: [GET, GTE]}\n    cluster: users\n"))
    line = find_error(errors, source, "routes[0].match.methods[1]", "unknown method 'GTE'", "did you mean GET?")
    assert "known methods: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH, PROPFIND" in line
    assert "omit methods to let the route take any method" in line


def test_unknown_method_without_a_close_one_lists_the_known(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {path: /x, methods: [PURGE]}\n    cluster: users\n"))
    line = find_error(errors, source, "routes[0].match.methods[0]", "unknown method 'PURGE'",
                      "(known methods: GET, HEAD")
    assert "did you mean" not in line


def test_connect_is_never_routed(config_errors, find_error):
    source, errors = config_errors(routes_config("  - match: {path: /x, methods: [connect]}\n    cluster: users\n"))
    find_error(errors, source, "routes[0].match.methods[0]", "CONNECT is never routed", "reverse proxy")


def test_webdav_methods_are_known(write_config):
    path = write_config("""
        clusters:
          dav: {endpoints: [http://127.0.0.1:9001]}
        routes:
          - match: {prefix: /dav, methods: [PROPFIND, proppatch, MKCOL, COPY, MOVE, LOCK, UNLOCK, REPORT,
                                            MKCALENDAR, SEARCH, PATCH, TRACE, OPTIONS, HEAD]}
            cluster: dav
        """)
    assert load(path, env={}).routes[0].match.methods[:2] == ("PROPFIND", "PROPPATCH")


def test_bad_duration_string(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "server:\n  timeouts:\n    client_header: 5 minutes\n")
    find_error(errors, source, "server.timeouts.client_header", "'5 minutes' is not a duration", "500ms, 5s, 2m, 1h")


def test_negative_duration(config_errors, find_error, minimal):
    source, errors = config_errors(minimal.replace("users:\n", "users:\n    timeouts: {connect: -1}\n", 1))
    find_error(errors, source, "clusters.users.timeouts.connect", "must be greater than 0", "500ms")


def test_boolean_is_not_a_duration(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "server:\n  timeouts:\n    keepalive: yes\n")
    find_error(errors, source, "server.timeouts.keepalive", "got the boolean true", "500ms, 5s")


def test_bad_size_string(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "server:\n  limits:\n    max_header_bytes: 16q\n")
    find_error(errors, source, "server.limits.max_header_bytes", "'16q' is not a size", "16k, 10m or 10MiB")


def test_limits_must_be_positive(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "server:\n  limits:\n    max_body_bytes: 0\n    max_header_count: 0\n")
    find_error(errors, source, "server.limits.max_body_bytes", "size must be greater than 0", "1024-based")
    find_error(errors, source, "server.limits.max_header_count", "must be 1 or more, got 0", "e.g. 100")


def test_section_must_be_a_mapping(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "server: [workers]\n")
    find_error(errors, source, "server", "expected a mapping, got a list", "indent its keys")


# --- listeners -------------------------------------------------------------

@pytest.mark.parametrize("address, problem, hint", [
    ("127.0.0.1:99999", "port 99999 is out of range", "between 1 and 65535"),
    ("127.0.0.1:0", "port 0 is out of range", "between 1 and 65535"),
    ("127.0.0.1", "'127.0.0.1' has no port", "e.g. 127.0.0.1:8080"),
    ("'::1:8080'", "an IPv6 address needs brackets", "[::1]:8080"),
    ("'[zz]:8080'", "'zz' is not an IPv6 address", "[::1]:8080"),
    ("8080", "expected a 'host:port' string, got the number 8080", "0.0.0.0:8080"),
])
def test_listener_address(config_errors, find_error, minimal, address, problem, hint):
    source, errors = config_errors(minimal + f"listeners:\n  - address: {address}\n")
    find_error(errors, source, "listeners[0].address", problem, hint)


def test_listener_address_is_required(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "listeners:\n  - name: public\n")
    find_error(errors, source, "listeners[0].address", "missing", "127.0.0.1:8080")


def test_duplicate_listener_addresses_name_both(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + """
listeners:
  - address: "[::1]:8080"
  - address: 127.0.0.1:8080
  - address: "[::1]:8080"
""")
    find_error(errors, source, "listeners[2].address", "[::1]:8080 is already used by listeners[0]", "its own host:port")


# --- clusters and endpoints ------------------------------------------------

def cluster_with(endpoints_yaml: str, extra: str = "") -> str:
    return f"""
clusters:
  users:
{extra}    endpoints:
{endpoints_yaml}
routes:
  - {{match: {{prefix: /}}, cluster: users}}
"""


def test_https_endpoint_is_not_supported_yet(config_errors, find_error):
    source, errors = config_errors(cluster_with("      - url: https://127.0.0.1:9001\n"))
    find_error(errors, source, "clusters.users.endpoints[0].url", "https upstreams are not supported yet", "use http://")


def test_shorthand_endpoint_errors_name_the_list_item(config_errors, find_error):
    source, errors = config_errors(cluster_with("      - http://127.0.0.1:9001\n      - 127.0.0.1:9002\n"))
    find_error(errors, source, "clusters.users.endpoints[1]", "'127.0.0.1:9002' has no scheme",
               "http://127.0.0.1:9002")


def test_endpoint_url_cannot_carry_a_path(config_errors, find_error):
    source, errors = config_errors(cluster_with("      - url: http://127.0.0.1:9001/v1\n"))
    find_error(errors, source, "clusters.users.endpoints[0].url", "cannot have a path ('/v1')", "rewrite_path")


def test_endpoint_port_out_of_range(config_errors, find_error):
    source, errors = config_errors(cluster_with("      - http://127.0.0.1:70000\n"))
    find_error(errors, source, "clusters.users.endpoints[0]", "port 70000 is out of range", "between 1 and 65535")


def test_duplicate_endpoint(config_errors, find_error):
    source, errors = config_errors(cluster_with("      - http://a:1\n      - url: http://A:1\n"))
    find_error(errors, source, "clusters.users.endpoints[1]", "a:1 is listed twice, first as endpoints[0]",
               "raise its weight")


def test_cluster_needs_endpoints(config_errors, find_error):
    source, errors = config_errors("""
        clusters:
          users: {lb: round_robin}
          empty: {endpoints: []}
        routes:
          - {match: {prefix: /}, cluster: users}
        """)
    find_error(errors, source, "clusters.users.endpoints", "missing", "endpoints: [http://127.0.0.1:9001]")
    find_error(errors, source, "clusters.empty.endpoints", "the list is empty", "endpoints: [http://127.0.0.1:9001]")


def test_unknown_lb_policy_suggests(config_errors, find_error):
    source, errors = config_errors(cluster_with("      - http://127.0.0.1:9001\n", extra="    lb: least_requests\n"))
    find_error(errors, source, "clusters.users.lb", "unknown load-balancing policy 'least_requests'",
               "did you mean 'least_request'?")


def test_cluster_name_must_be_simple(config_errors, find_error):
    source, errors = config_errors("""
        clusters:
          bad name: {endpoints: [http://127.0.0.1:9001]}
        routes:
          - {match: {prefix: /}, cluster: bad name}
        """)
    find_error(errors, source, "clusters.bad name", "'bad name' is not a valid name", "letters, digits")


def test_clusters_and_routes_are_required(config_errors, find_error):
    source, errors = config_errors("server: {workers: 2}\n")
    find_error(errors, source, "clusters", "missing", "clusters: {users:")
    find_error(errors, source, "routes", "missing", "cluster: NAME")


# --- routes: match ---------------------------------------------------------

def test_match_needs_exactly_one_of_path_and_prefix(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - match: {path: /a, prefix: /b}
    cluster: users
  - match: {methods: [GET]}
    cluster: users
"""))
    find_error(errors, source, "routes[0].match", "has both path and prefix", "exactly one of")
    find_error(errors, source, "routes[1].match", "has neither path nor prefix", "exactly one of")


def test_route_needs_match(config_errors, find_error):
    source, errors = config_errors(routes_config("  - cluster: users\n"))
    find_error(errors, source, "routes[0].match", "missing", "prefix, for a subtree like /api")


@pytest.mark.parametrize("key, value, problem, hint", [
    ("path", "users/{id}", "path 'users/{id}' does not start with '/'", "like /users/{id}"),
    ("prefix", "api", "prefix 'api' does not start with '/'", "like /api"),
    ("path", "/users/id-{id}", "segment 'id-{id}' of path '/users/id-{id}' mixes a {param} with other text",
     "whole segment between slashes"),
    ("path", "/users/{1x}", "{1x} in '/users/{1x}' is not a valid parameter name", "e.g. {user_id}"),
    ("path", "/users/{id}/posts/{id}", "parameter {id} appears twice", "/users/{id}/posts/{post_id}"),
    ("prefix", "/api/{version}", "prefix '/api/{version}' contains a {param}", "prefixes match literally"),
    ("path", "/search?q=1", "contains '?'", "queries are not matched"),
    ("path", "/a/../b", "has a '..' segment", "could never match"),
    ("prefix", "/café", "prefix '/café' has non-ASCII characters", "as clients send it: /caf%C3%A9"),
])
def test_bad_route_paths(config_errors, find_error, key, value, problem, hint):
    source, errors = config_errors(routes_config(f"  - match: {{{key}: \"{value}\"}}\n    cluster: users\n"))
    find_error(errors, source, f"routes[0].match.{key}", problem, hint)


def test_template_parameter_limit(config_errors, find_error):
    path = "".join(f"/{{p{i}}}" for i in range(33))
    source, errors = config_errors(routes_config(f"  - match: {{path: \"{path}\"}}\n    cluster: users\n"))
    find_error(errors, source, "routes[0].match.path", "has 33 parameters", "at most 32")


@pytest.mark.parametrize("host, problem, hint", [
    ("api.*.example.com", "only a leading '*.' wildcard is supported", "*.example.com"),
    ("api.example.com:8080", "has a port", "remove ':port'"),
    ("'*'", "'*' as a host matches everything", "omit host"),
    ("bad_host!", "is not a valid host name", "api.example.com"),
])
def test_bad_route_hosts(config_errors, find_error, host, problem, hint):
    source, errors = config_errors(routes_config(f"  - match: {{prefix: /, host: {host}}}\n    cluster: users\n"))
    find_error(errors, source, "routes[0].match.host", problem, hint)


# --- routes: references, names, duplicates ---------------------------------

def test_unknown_cluster_suggests_the_close_one(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {match: {path: /a}, cluster: users}
  - {match: {path: /b}, cluster: users}
  - {match: {path: /c}, cluster: userz}
"""))
    line = find_error(errors, source, "routes[2].cluster")
    assert line == f"{source}: routes[2].cluster: unknown cluster 'userz' (did you mean 'users'?)"


def test_unknown_cluster_without_close_match_lists_clusters(config_errors, find_error):
    source, errors = config_errors(routes_config("  - {match: {path: /a}, cluster: billing}\n"))
    find_error(errors, source, "routes[0].cluster", "unknown cluster 'billing'", "defined clusters: users")


def test_route_needs_a_cluster(config_errors, find_error):
    source, errors = config_errors(routes_config("  - {match: {path: /a}}\n"))
    find_error(errors, source, "routes[0].cluster", "missing", "defined clusters: users")


def test_duplicate_route_names(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {name: api, match: {path: /a}, cluster: users}
  - {name: route-2, match: {path: /b}, cluster: users}
  - {match: {path: /c}, cluster: users}
  - {name: api, match: {path: /d}, cluster: users}
"""))
    find_error(errors, source, "routes[2].name", "route name 'route-2' is already used by routes[1]", "route-INDEX")
    find_error(errors, source, "routes[3].name", "route name 'api' is already used by routes[0]", "unique name")


def test_duplicate_routes_name_both_indexes(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {name: get-user, match: {path: "/users/{id}", methods: [GET, PUT]}, cluster: users}
  - {name: other, match: {path: /other}, cluster: users}
  - {name: again, match: {path: "/users/{uid}", methods: [put]}, cluster: users}
"""))
    find_error(errors, source, "routes[2].match", "duplicates routes[0] 'get-user'", "both allow PUT",
               "routes[2] could never match")


def test_duplicate_catch_all_prefix(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {match: {prefix: /}, cluster: users}
  - {match: {prefix: /}, cluster: users}
"""))
    find_error(errors, source, "routes[1].match", "duplicates routes[0] 'route-0'", "both allow any method")


def test_method_less_route_after_a_method_list_is_shadowed(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {name: any, match: {prefix: /ord}, cluster: users}
  - {name: get, match: {prefix: /ord, methods: [GET]}, cluster: users}
"""))
    find_error(errors, source, "routes[1].match", "duplicates routes[0] 'any'", "already takes any method",
               "routes[1] could never match")


def test_routes_differing_in_methods_or_host_are_not_duplicates(write_config):
    path = write_config(routes_config("""\
  - {match: {path: "/users/{id}", methods: [GET]}, cluster: users}
  - {match: {path: "/users/{id}", methods: [DELETE]}, cluster: users}
  - {match: {path: "/users/{id}", host: api.example.com}, cluster: users}
  - {match: {prefix: /users}, cluster: users}
"""))
    assert len(load(path, env={}).routes) == 4


def test_method_list_then_catch_all_fallback_is_allowed(write_config):
    # GET goes to the first route, every other method to the second: both are reachable.
    path = write_config(routes_config("""\
  - {match: {prefix: /dup, methods: [GET]}, cluster: users}
  - {match: {prefix: /dup}, cluster: users}
"""))
    assert len(load(path, env={}).routes) == 2


# --- routes: upstream path -------------------------------------------------

def test_strip_prefix_must_lead_the_match(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {match: {prefix: /api}, strip_prefix: /ap, cluster: users}
  - {match: {path: /v1/x}, strip_prefix: /v2, cluster: users}
"""))
    find_error(errors, source, "routes[0].strip_prefix", "'/ap' is not a leading part of match.prefix '/api'",
               "whole leading segments")
    find_error(errors, source, "routes[1].strip_prefix", "'/v2' is not a leading part of match.path '/v1/x'",
               "strip_prefix: /api with prefix: /api")


def test_strip_prefix_and_rewrite_path_exclude_each_other(config_errors, find_error):
    source, errors = config_errors(routes_config(
        "  - {match: {prefix: /api}, strip_prefix: /api, rewrite_path: /v2, cluster: users}\n"))
    find_error(errors, source, "routes[0].rewrite_path", "cannot be combined with strip_prefix", "remove strip_prefix")


def test_rewrite_path_params_must_come_from_the_template(config_errors, find_error):
    source, errors = config_errors(routes_config("""\
  - {match: {path: "/users/{id}"}, rewrite_path: "/v2/users/{idd}", cluster: users}
  - {match: {prefix: /x}, rewrite_path: "/y/{id}", cluster: users}
  - {match: {path: /z}, rewrite_path: "z", cluster: users}
"""))
    find_error(errors, source, "routes[0].rewrite_path", "uses {idd}, which the route's path does not define",
               "did you mean 'id'?")
    find_error(errors, source, "routes[1].rewrite_path", "uses {id}", "only a path template like /users/{id}")
    find_error(errors, source, "routes[2].rewrite_path", "rewrite_path 'z' does not start with '/'", "like /z")


# --- routes: headers and timeouts ------------------------------------------

def headers_route(headers_yaml: str) -> str:
    return routes_config("  - match: {prefix: /}\n    cluster: users\n" + headers_yaml)


@pytest.mark.parametrize("op, name", [("set", "Connection"), ("add", "Transfer-Encoding"),
                                      ("set", "Upgrade"), ("set", "TE"), ("add", "Keep-Alive")])
def test_hop_by_hop_headers_cannot_be_set(config_errors, find_error, op, name):
    source, errors = config_errors(headers_route(f"    request_headers:\n      {op}: {{{name}: x}}\n"))
    find_error(errors, source, f"routes[0].request_headers.{op}.{name}",
               f"{name.lower()} is a hop-by-hop header and cannot be set or added", "connection-level headers")


def test_content_length_cannot_be_set(config_errors, find_error):
    source, errors = config_errors(headers_route("    response_headers:\n      set: {Content-Length: '5'}\n"))
    find_error(errors, source, "routes[0].response_headers.set.Content-Length",
               "content-length cannot be set or added", "derives Content-Length from the body")


@pytest.mark.parametrize("name, hint", [
    ("Content-Length", "read the body as another request"),
    ("Transfer-Encoding", "read the body as another request"),
    ("Host", "use set: {Host: NAME} to replace it"),
])
def test_framing_headers_cannot_be_removed(config_errors, find_error, name, hint):
    source, errors = config_errors(headers_route(f"    request_headers:\n      remove: [{name}]\n"))
    find_error(errors, source, "routes[0].request_headers.remove[0]",
               f"{name.lower()} cannot be removed", hint)


def test_header_value_cannot_contain_crlf(config_errors, find_error):
    source, errors = config_errors(headers_route('    request_headers:\n      set: {X-A: "a\\r\\nX-Evil: b"}\n'))
    find_error(errors, source, "routes[0].request_headers.set.X-A", "control character '\\r'", "header injection")


def test_header_name_must_be_a_token(config_errors, find_error):
    source, errors = config_errors(headers_route('    request_headers:\n      add: {"X Bad": v}\n'))
    find_error(errors, source, "routes[0].request_headers.add.X Bad", "'X Bad' is not a valid header name",
               "e.g. X-Request-Id")


def test_header_boolean_value_must_be_quoted(config_errors, find_error):
    source, errors = config_errors(headers_route("    request_headers:\n      set: {X-Flag: yes}\n"))
    find_error(errors, source, "routes[0].request_headers.set.X-Flag", "got the boolean true", "quote values")


def test_header_remove_must_be_a_list(config_errors, find_error):
    source, errors = config_errors(headers_route("    request_headers:\n      remove: X-Debug\n"))
    find_error(errors, source, "routes[0].request_headers.remove", "expected a list, got the string 'X-Debug'",
               "remove: [X-Debug]")


def test_header_in_two_operations(config_errors, find_error):
    source, errors = config_errors(headers_route(
        "    request_headers:\n      set: {X-Id: a}\n      remove: [x-id]\n"))
    find_error(errors, source, "routes[0].request_headers.remove.x-id", "header is also in set",
               "only one of add, set or remove")


def test_route_timeouts_are_validated(config_errors, find_error):
    source, errors = config_errors(headers_route("    timeouts: {respnse_header: 1s, idle: forever}\n"))
    find_error(errors, source, "routes[0].timeouts.respnse_header", "unknown key", "did you mean 'response_header'?")
    find_error(errors, source, "routes[0].timeouts.idle", "'forever' is not a duration", "1h")


# --- environment -----------------------------------------------------------

def test_invalid_env_listen(config_errors, find_error, minimal):
    source, errors = config_errors(minimal, env={"FASTGW_LISTEN": "0.0.0.0:http"})
    find_error(errors, source, "env FASTGW_LISTEN", "port 'http' is not a number", "0.0.0.0:8080")


def test_invalid_env_workers(config_errors, find_error, minimal):
    source, errors = config_errors(minimal, env={"FASTGW_WORKERS": "many"})
    find_error(errors, source, "env FASTGW_WORKERS", "expected a number or 'auto', got 'many'", "e.g. 4")


# --- the file itself -------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load(missing, env={})
    assert caught.value.errors == [f"{missing}: file not found (check the path; start from examples/gateway.yaml)"]


def test_yaml_syntax_error_names_line_and_column(write_config):
    # The unclosed [ is on line 3; PyYAML notices at line 4 ("routes:"): the
    # error names the line of the mistake first.
    path = write_config("clusters:\n  users:\n    endpoints: [http://a:1\nroutes: []\n")
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    (line,) = caught.value.errors
    assert line.startswith(f"{path}: line 3, column 16: invalid YAML: the [ list that starts here is not closed "
                           "(expected ',' or ']', but got ':' at line 4, column 7)")
    assert "check the indentation" in line


@pytest.mark.parametrize("text, where, fragment", [
    ("a: 1\nb\nc: 2\n", "line 2, column 1", "the key that starts here has no ':' after it"),
    ("a: {b: 1\nc: 2\n", "line 1, column 4", "the { mapping that starts here is not closed"),
    ("a: 'x\n\nb: 1\n", "line 1, column 4", "the quoted string that starts here is not closed"),
    ("a: [1, 2\n\n\nb: 1\n", "line 1, column 4", "the [ list that starts here is not closed"),
    # Where PyYAML's mark is the mistake already, it stays.
    ("a:\n  b: 1\n c: 2\n", "line 3, column 2", "expected <block end>"),
    ("a: b\nc: d: e\n", "line 2, column 5", "mapping values are not allowed here"),
])
def test_yaml_syntax_errors_point_at_the_mistake(write_config, text, where, fragment):
    path = write_config(text)
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    (line,) = caught.value.errors
    assert line.startswith(f"{path}: {where}: invalid YAML: {fragment}"), line


def test_yaml_that_is_not_a_mapping(config_errors, find_error):
    source, errors = config_errors("- just\n- a list\n")
    find_error(errors, source, "(top level)", "expected a mapping at the top, got a list", "examples/gateway.yaml")


def test_empty_file(config_errors, find_error):
    source, errors = config_errors("# nothing yet\n")
    find_error(errors, source, "(top level)", "the file is empty", "listeners, server, clusters, routes")


def test_binary_file(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00garbage")
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.errors == [f"{path}: line 1, column 1: not a UTF-8 text file: byte 0x89 there is not "
                                   "UTF-8 (a config is UTF-8 YAML text; re-save it as UTF-8, or remove that byte)"]


def test_duplicate_yaml_keys_are_errors(config_errors, minimal):
    source, errors = config_errors(minimal + "clusters:\n  other: {endpoints: [http://b:1]}\n")
    assert f"{source}: line 8: duplicate key 'clusters', first at line 2 (each key may appear once in a " \
           "mapping; YAML would silently keep only the last)" in errors


# --- collecting ------------------------------------------------------------

def test_all_errors_are_collected_in_file_order(config_errors):
    source, errors = config_errors("""
        listeners:
          - address: 127.0.0.1:0
        server:
          workers: -2
        clusters:
          users:
            endpoints: [https://a:1]
        routes:
          - {match: {path: nope}, cluster: userz}
        """)
    assert [line.split(": ")[1] for line in errors] == [
        "listeners[0].address", "server.workers", "clusters.users.endpoints[0]",
        "routes[0].match.path", "routes[0].cluster",
    ]
    assert all(line.startswith(f"{source}: ") for line in errors)


def test_config_error_str_is_one_line_per_error(config_errors):
    source, errors = config_errors(routes_config("  - {match: {path: /a}, cluster: nope, extra: 1}\n"))
    error = ConfigError(errors)
    assert str(error) == "\n".join(errors)
    assert len(errors) == 2


# --- command line ----------------------------------------------------------

def test_command_line_errors_name_the_flag():
    with pytest.raises(ConfigError) as caught:
        from_command_line("127.0.0.1:8080", "https://127.0.0.1:9001", None, None, env={})
    assert caught.value.errors == [
        "<command line>: --upstream: https upstreams are not supported yet "
        "(use http:// and terminate TLS to the upstream elsewhere)"
    ]


def test_command_line_collects_every_bad_flag():
    with pytest.raises(ConfigError) as caught:
        from_command_line("localhost", "127.0.0.1:9001", -1, "soon", env={})
    keys = [line.split(": ")[1] for line in caught.value.errors]
    assert keys == ["--listen", "--upstream", "--workers", "--upstream-timeout"]
