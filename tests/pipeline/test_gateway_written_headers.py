"""The gateway-written request headers are three policies (issue 9, item 2):
each module sets its own bit of the route's plan, trace context only when
`tracing.propagate` is on, and the registry installs all three."""
from __future__ import annotations

from types import SimpleNamespace

import yaml

from fastgw._native.headers import FORWARDED, REQUEST_ID, TRACE
from fastgw.config import load
from fastgw.pipeline.plan import PlanBuilder
from fastgw.pipeline.registry import POLICIES
from fastgw.policy import forwarded_headers, request_id, trace_context

MINIMAL = {"clusters": {"main": {"endpoints": ["http://127.0.0.1:9"]}},
           "routes": [{"match": {"prefix": "/"}, "cluster": "main"}]}


def _flags(tmp_path, policies, **top):
    path = tmp_path / "fastgw.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **top}))
    config = load(path, env={})
    builder = PlanBuilder(config.routes[0], SimpleNamespace(config=config))
    for policy in policies:
        policy.install(builder, config.routes[0])
    return builder.finish().head_flags


def test_each_policy_sets_its_own_bit(tmp_path):
    assert _flags(tmp_path, []) == 0
    assert _flags(tmp_path, [forwarded_headers.POLICY]) == FORWARDED
    assert _flags(tmp_path, [request_id.POLICY]) == REQUEST_ID
    assert _flags(tmp_path, [trace_context.POLICY]) == TRACE


def test_trace_context_follows_tracing_propagate(tmp_path):
    assert _flags(tmp_path, [trace_context.POLICY], tracing={"propagate": False}) == 0


def test_the_registry_installs_all_three():
    names = [policy.name for policy in POLICIES]
    assert {"forwarded_headers", "request_id", "trace_context"} <= set(names)
    for module in (forwarded_headers, request_id, trace_context):
        assert module.POLICY in POLICIES
