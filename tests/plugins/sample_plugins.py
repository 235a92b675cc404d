"""Plugins the plugin tests load into a real gateway (this directory is put
on the gateway's PYTHONPATH by tests/plugins/test_plugins_e2e.py)."""
import asyncio
import time

from fastgw.plugins import Plugin, PluginConfigError


class Tag(Plugin):
    """Appends its `tag` to X-Order at every phase it sees: the upstream and
    the client can read the order in which plugins and phases ran."""

    def __init__(self, config):
        super().__init__(config)
        self.tag = config.get("tag")
        if not isinstance(self.tag, str):
            raise PluginConfigError("tag", "expected a string", "e.g. tag: a")

    def _append(self, headers_owner, current):
        headers_owner.set_header("x-order", (current + "," if current else "") + self.tag)

    def on_request_head(self, request):
        self._append(request, request.headers.get("x-order", ""))

    def on_access(self, request):
        self._append(request, request.headers.get("x-order", ""))
        request.log(f"seen_{self.tag}", request.route)

    def on_response_head(self, request, response):
        self._append(response, response.headers.get("x-order", ""))


class AsyncCheck(Plugin):
    """An async on_access: waits `delay` seconds, then admits when the
    X-Key header equals `key`, else answers 401."""

    def __init__(self, config):
        super().__init__(config)
        self.key = config.get("key", "secret")
        self.delay = float(config.get("delay", 0.01))

    async def on_access(self, request):
        await asyncio.sleep(self.delay)
        if request.headers.get("x-key") != self.key:
            return request.respond(401, {"error": "bad key"}, {"WWW-Authenticate": "Key"})
        request.set_header("x-key-ok", "1")
        return None


class Broken(Plugin):
    """Raises in the phase named by `where` for requests whose path contains /boom."""

    def __init__(self, config):
        super().__init__(config)
        self.where = config.get("where", "on_access")

    def _maybe_raise(self, request, hook):
        if hook == self.where and "/boom" in request.path:
            raise RuntimeError(f"deliberate failure in {hook}")

    def on_access(self, request):
        self._maybe_raise(request, "on_access")

    def on_response_head(self, request, response):
        self._maybe_raise(request, "on_response_head")

    def on_log(self, request):
        self._maybe_raise(request, "on_log")


class Slow(Plugin):
    """A sync hook that burns `seconds` (over any small budget)."""

    def on_access(self, request):
        if "/slow-plugin" in request.path:
            time.sleep(float(self.config.get("seconds", 0.02)))


class Forbidden(Plugin):
    """Tries to set a framing header: the gateway refuses (500 plugin_error)."""

    def on_access(self, request):
        request.set_header("Content-Length", "5")


class Inspect(Plugin):
    """Answers itself with what it can read of the request (no upstream)."""

    def on_access(self, request):
        if request.path.startswith("/inspect"):
            return request.respond(200, {
                "method": request.method, "path": request.path, "query": request.query,
                "client_ip": request.client_ip, "route": request.route, "params": request.params,
                "agent": request.headers.get("user-agent"), "request_id": request.request_id,
            })
        return None


class Ledger(Plugin):
    """Appends one JSON line per request to the file `path` from on_log:
    method, path, status, and whether on_log got the very Request object
    on_access saw (plugins are promised one object per request)."""

    def __init__(self, config):
        super().__init__(config)
        self.path = config["path"]
        self.seen = {}

    def on_access(self, request):
        self.seen[request.request_id] = request

    def on_log(self, request):
        import json
        same = self.seen.pop(request.request_id, None) is request
        with open(self.path, "a") as out:
            out.write(json.dumps({"method": request.method, "path": request.path,
                                  "same_request": same}) + "\n")
