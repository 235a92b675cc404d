"""Config for the top-level metrics, access_log and tracing sections:
defaults, values, and errors naming file and key path."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.model import AccessLog, MetricsSettings, Observe, Tracing


def test_defaults(write_config, minimal):
    observe = load(write_config(minimal), env={}).observe
    assert observe == Observe(metrics=MetricsSettings(enabled=True), access_log=AccessLog(enabled=False),
                              tracing=Tracing(propagate=True))
    assert b"authorization" in observe.access_log.redact_headers
    assert "token" in observe.access_log.redact_query


def test_values(write_config, minimal):
    config = load(write_config(minimal + """
metrics: {enabled: false}
tracing: {propagate: false}
access_log:
  path: /tmp/access.log
  sampling: 0.25
  flush_interval: 200ms
  headers: [User-Agent, X-Tenant]
  redact_headers: [x-tenant]
  redact_query: [sig]
"""), env={})
    assert config.observe.metrics.enabled is False
    assert config.observe.tracing.propagate is False
    log = config.observe.access_log
    # Writing the section turns the log on unless it says enabled: false.
    assert log == AccessLog(enabled=True, path="/tmp/access.log", sampling=0.25, flush_interval=0.2,
                            headers=(b"user-agent", b"x-tenant"), redact_headers=(b"x-tenant",),
                            redact_query=("sig",))
    assert load(write_config(minimal + "access_log: {path: stdout, enabled: false}\n"), env={}) \
        .observe.access_log == AccessLog(enabled=False, path=None)


def test_each_value_error(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + """
metrics: {enabled: "yes", port: 9090}
tracing: {propagate: 1}
access_log:
  sampling: 2
  path: ""
  flush_interval: never
  headers: [user-agent, "bad header"]
  redact_query: ["a=b"]
""")
    find_error(errors, source, "metrics.enabled", "expected true or false")
    find_error(errors, source, "metrics.port", "unknown key")
    find_error(errors, source, "tracing.propagate", "expected true or false")
    find_error(errors, source, "access_log.sampling", "between 0 and 1")
    find_error(errors, source, "access_log.path", "expected a path")
    find_error(errors, source, "access_log.flush_interval", "never")
    find_error(errors, source, "access_log.headers[1]", "not a valid header name")
    find_error(errors, source, "access_log.redact_query[0]", "not a query parameter name")
    assert len(errors) == 8, errors


def test_section_must_be_a_mapping(config_errors, find_error, minimal):
    source, errors = config_errors(minimal + "access_log: yes\n")
    find_error(errors, source, "access_log", "expected a mapping")


def test_span_export(write_config, config_errors, find_error, minimal):
    from fastgw.config.model import SpanExport
    config = load(write_config(minimal + "tracing: {export: {endpoint: 'http://127.0.0.1:4318/v1/traces'}}\n"),
                  env={})
    assert config.observe.tracing.export == SpanExport(endpoint="http://127.0.0.1:4318/v1/traces")
    assert load(write_config(minimal), env={}).observe.tracing.export is None
    source, errors = config_errors(minimal + "tracing: {export: {service_name: 'a b', flush_interval: 0}}\n")
    find_error(errors, source, "tracing.export.endpoint", "missing", "4318")
    find_error(errors, source, "tracing.export.service_name", "not a valid name")
    find_error(errors, source, "tracing.export.flush_interval", "greater than 0")
    source, errors = config_errors(minimal + "tracing: {propagate: false, export: {endpoint: 'grpc://c:4317'}}\n")
    find_error(errors, source, "tracing.export.endpoint", "not an http(s) URL")
    find_error(errors, source, "tracing.export", "needs propagate: true")
