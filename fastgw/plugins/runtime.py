"""Plugins in a worker: each configured plugin instantiated once, its hooks
wrapped into the plan's phase slots (fastgw/pipeline/plan.py):

- on_request_head, on_access -> a native `PluginHook` stage in the route's
  stages, in phase order, which the exchange calls and times itself; an
  async hook keeps the exchange (WAIT) and answers through
  `exchange.admission_done` when it completes;
- on_response_head -> a response hook (`hook(exchange, status, headers)`);
- on_log -> a log hook (`hook(exchange)`), run before the access-log line.

A hook that raises gives its request a 500 `plugin_error` (the traceback is
logged, at most once per plugin per LOG_EVERY seconds, with a count of the
ones left out); a call slower than the plugin's `budget` is logged the same
way; an async request hook still running after `timeout` gives 504
`plugin_timeout`. Every other request is served as usual.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time

from fastgw._native.proxy import WAIT, Answer, PluginHook
from fastgw.plugins.api import Request, Response
from fastgw.proxy.errors import ProxyError

log = logging.getLogger("fastgw.plugins")

LOG_EVERY = 10.0


class _Reporter:
    """Rate-limited logging for one plugin: failures and slow calls."""

    __slots__ = ("name", "budget", "_next_error", "_errors_left_out", "_next_slow", "_slow_left_out")

    def __init__(self, name: str, budget: float) -> None:
        self.name, self.budget = name, budget
        self._next_error = self._next_slow = 0.0
        self._errors_left_out = self._slow_left_out = 0

    def failed(self, hook: str, err: BaseException) -> ProxyError:
        now = time.monotonic()
        if now >= self._next_error:
            extra = f" ({self._errors_left_out} more since the last report)" if self._errors_left_out else ""
            log.error("plugin %s: %s raised %s%s", self.name, hook, type(err).__name__, extra,
                      exc_info=(type(err), err, err.__traceback__))
            self._next_error, self._errors_left_out = now + LOG_EVERY, 0
        else:
            self._errors_left_out += 1
        return ProxyError(500, "plugin_error", f"plugin {self.name} failed in {hook}")

    def timed(self, hook: str, started: float, now: float | None = None) -> None:
        """`started` by time.perf_counter() (or, with `now`, on the same clock as it)."""
        spent = (time.perf_counter() if now is None else now) - started
        if spent > self.budget:
            self.slow(hook, spent)

    def slow(self, hook: str, spent: float) -> None:
        now = time.monotonic()
        if now >= self._next_slow:
            extra = f" ({self._slow_left_out} more since the last report)" if self._slow_left_out else ""
            log.warning("plugin %s: %s took %.1f ms, over its budget of %.1f ms%s",
                        self.name, hook, spent * 1e3, self.budget * 1e3, extra)
            self._next_slow, self._slow_left_out = now + LOG_EVERY, 0
        else:
            self._slow_left_out += 1


def request_of(exchange) -> Request:
    """The one Request view of an exchange, made on first use."""
    req = exchange.context
    if req is None:
        exchange.context = req = Request(exchange)
    return req


def make_stage(hook, hook_name: str, reporter: _Reporter, timeout: float, loop, phase) -> PluginHook:
    """A request-phase hook as a native stage: the exchange calls the hook and
    times it; what a hook returns other than None comes back here."""
    label = f"<plugin {reporter.name} {hook_name}>"

    def on_error(err):
        return reporter.failed(hook_name, err)

    def on_slow(spent_ns):
        reporter.slow(hook_name, spent_ns / 1e9)

    def on_result(exchange, result, started_ns):
        if type(result) is Answer:
            return result
        if inspect.isawaitable(result):
            task = loop.create_task(_finish(exchange, result, started_ns))
            exchange.on_finish(lambda _ex: task.cancel())  # the client left: stop waiting
            return WAIT
        return reporter.failed(hook_name, TypeError(
            f"{hook_name} returned {type(result).__name__}; return None or request.respond(...)"))

    async def _finish(exchange, awaitable, started_ns):
        try:
            result = await asyncio.wait_for(awaitable, timeout)
        except asyncio.CancelledError:
            return
        except TimeoutError:
            verdict = ProxyError(504, "plugin_timeout",
                                 f"plugin {reporter.name} did not finish {hook_name} within {timeout:g}s")
        except Exception as err:
            verdict = reporter.failed(hook_name, err)
        else:
            reporter.timed(hook_name, started_ns / 1e9, now=time.monotonic_ns() / 1e9)
            verdict = None if result is None else on_result(exchange, result, started_ns)
            if verdict is WAIT:  # an awaitable that gave an awaitable: not a plugin's answer
                verdict = reporter.failed(hook_name, TypeError(f"{hook_name} returned an awaitable twice"))
        exchange.admission_done(verdict)

    stage = PluginHook()
    stage.hook, stage.make_request = hook, Request
    stage.on_result, stage.on_error, stage.on_slow = on_result, on_error, on_slow
    stage.budget_ns = int(reporter.budget * 1e9)
    stage.phase, stage.label = phase, label
    return stage


class ResponseHook:
    __slots__ = ("hook", "reporter")

    def __init__(self, hook, reporter: _Reporter) -> None:
        self.hook, self.reporter = hook, reporter

    def __call__(self, exchange, status: int, headers: list):
        started = time.perf_counter()
        try:
            self.hook(request_of(exchange), Response(status, headers))
        except Exception as err:
            return self.reporter.failed("on_response_head", err)
        self.reporter.timed("on_response_head", started)
        return None


class LogHook:
    __slots__ = ("hook", "reporter", "timeout", "loop")

    def __init__(self, hook, reporter: _Reporter, timeout: float, loop) -> None:
        self.hook, self.reporter, self.timeout, self.loop = hook, reporter, timeout, loop

    def __call__(self, exchange) -> None:
        started = time.perf_counter()
        try:
            result = self.hook(request_of(exchange))
        except Exception as err:
            self.reporter.failed("on_log", err)
            return
        if inspect.isawaitable(result):
            self.loop.create_task(self._finish(result, started))
        else:
            self.reporter.timed("on_log", started)

    async def _finish(self, awaitable, started: float) -> None:
        try:
            await asyncio.wait_for(awaitable, self.timeout)
        except Exception as err:
            self.reporter.failed("on_log", err)
        else:
            self.reporter.timed("on_log", started)


class PluginInstance:
    """One configured plugin in this worker, and its wrapped hooks."""

    def __init__(self, spec, loop) -> None:
        from fastgw.pipeline.phases import Phase

        self.spec = spec
        self.plugin = spec.factory(spec.config)
        reporter = _Reporter(spec.name, spec.budget)
        self.stages = []
        for hook_name, phase in (("on_request_head", Phase.REQUEST_HEAD), ("on_access", Phase.ACCESS)):
            hook = getattr(self.plugin, hook_name, None)
            if hook is not None:
                self.stages.append(make_stage(hook, hook_name, reporter, spec.timeout, loop, phase))
        hook = getattr(self.plugin, "on_response_head", None)
        self.response_hook = ResponseHook(hook, reporter) if hook is not None else None
        hook = getattr(self.plugin, "on_log", None)
        self.log_hook = LogHook(hook, reporter, spec.timeout, loop) if hook is not None else None
