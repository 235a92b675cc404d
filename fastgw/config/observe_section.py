"""Readers for the top-level `metrics`, `access_log` and `tracing` sections."""
from __future__ import annotations

import importlib.util

from fastgw.config.errors import Invalid, item
from fastgw.config.model import AccessLog, MetricsSettings, Observe, SpanExport, Tracing
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.schema import describe, parse_bool, parse_duration, parse_header_name, parse_name

METRICS_KEYS = ("enabled",)
ACCESS_LOG_KEYS = ("enabled", "path", "sampling", "flush_interval", "headers", "redact_headers", "redact_query")
TRACING_KEYS = ("propagate", "export")
EXPORT_KEYS = ("endpoint", "service_name", "flush_interval")
OTLP_HINT = "write the OTLP/HTTP traces URL of a collector, e.g. http://127.0.0.1:4318/v1/traces"

SAMPLING_HINT = "write the share of requests to log, from 0 (none) to 1 (all), e.g. 0.1"
PATH_HINT = "write stdout, or the path of a file to append to, e.g. /var/log/fastgw/access.log"
QUERY_HINT = "write query parameter names, e.g. [token, api_key]"


def parse_sampling(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {describe(value)}", SAMPLING_HINT)
    if not 0 <= value <= 1:
        raise Invalid(f"must be between 0 and 1, got {value}", SAMPLING_HINT)
    return float(value)


def parse_log_path(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a path, got {describe(value)}", PATH_HINT)
    return None if value == "stdout" else value


def parse_query_name(value: object) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "&=#? "):
        raise Invalid(f"{describe(value)} is not a query parameter name", QUERY_HINT)
    return value


def read_observe(top: Section) -> Observe:
    return Observe(metrics=_read_metrics(top.section("metrics", METRICS_KEYS)),
                   access_log=_read_access_log(top.section("access_log", ACCESS_LOG_KEYS)),
                   tracing=_read_tracing(top.section("tracing", TRACING_KEYS)))


def _read_metrics(section: Section) -> MetricsSettings:
    return MetricsSettings(enabled=section.parse("enabled", parse_bool, True))


def _read_tracing(section: Section) -> Tracing:
    propagate = section.parse("propagate", parse_bool, True)
    export = None
    if "export" in section.raw:
        export = _read_export(section.section("export", EXPORT_KEYS))
        if not propagate and section.has("propagate"):
            section.errors.add(section.path("export"), "needs propagate: true",
                               "exported spans carry the ids sent upstream in traceparent; "
                               "remove propagate: false or the export section")
    return Tracing(propagate=propagate, export=export)


def parse_otlp_url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) < 10:
        raise Invalid(f"{describe(value)} is not an http(s) URL", OTLP_HINT)
    return value


def _read_export(section: Section) -> SpanExport | None:
    endpoint = section.require("endpoint", parse_otlp_url, "", OTLP_HINT)
    service = section.parse("service_name", parse_name, "fastgw")
    flush = section.parse("flush_interval", parse_duration, 1.0)
    if importlib.util.find_spec("opentelemetry.sdk") is None or \
            importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        section.errors.add(section.keypath, "the OpenTelemetry SDK is not installed",
                           "pip install 'fastgw[otel]', or remove tracing.export")
    return SpanExport(endpoint=endpoint, service_name=service, flush_interval=flush) if endpoint else None


def _names(section: Section, key: str, parser, default: tuple, hint: str) -> tuple:
    if not section.has(key):
        return default
    names = []
    for index, raw in enumerate(section.list(key, hint)):
        name = parse_or_record(section.errors, item(section.path(key), index), parser, raw, None)
        if name is not None and name not in names:
            names.append(name)
    return tuple(names)


def _read_access_log(section: Section) -> AccessLog:
    defaults = AccessLog()
    # Writing `access_log:` with keys but no `enabled` means the user wants it.
    enabled = section.parse("enabled", parse_bool, bool(section.raw))
    return AccessLog(
        enabled=enabled,
        path=section.parse("path", parse_log_path, None),
        sampling=section.parse("sampling", parse_sampling, 1.0),
        flush_interval=section.parse("flush_interval", parse_duration, defaults.flush_interval),
        headers=_names(section, "headers", parse_header_name, (), "write header names, e.g. [user-agent]"),
        redact_headers=_names(section, "redact_headers", parse_header_name, defaults.redact_headers,
                              "write header names, e.g. [authorization, cookie]"),
        redact_query=_names(section, "redact_query", parse_query_name, defaults.redact_query, QUERY_HINT),
    )



