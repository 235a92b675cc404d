"""An example fastgw plugin: every request must name its tenant.

    plugins:
      - use: plugins.tenant_gate:TenantGate
        config: {header: x-tenant, allowed: [acme, globex]}

- on_access: a request without the header, or with a tenant not in
  `allowed`, gets 403 from the gateway; others go upstream with
  `X-Tenant-Checked: <tenant>`;
- on_response_head: the answer carries `X-Served-For: <tenant>`;
- on_log: the access-log line gets a `tenant` field.

Run it (the config file's directory is on the plugin search path, so
`plugins.tenant_gate` is this file):

    fastgw run --config examples/plugins.yaml
"""
from fastgw.plugins import Plugin, PluginConfigError


class TenantGate(Plugin):
    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.header = config.get("header", "x-tenant")
        if not isinstance(self.header, str) or not self.header:
            raise PluginConfigError("header", "expected a header name", "e.g. header: x-tenant")
        allowed = config.get("allowed")
        if allowed is not None and (not isinstance(allowed, list)
                                    or not all(isinstance(a, str) for a in allowed)):
            raise PluginConfigError("allowed", "expected a list of tenant names", "e.g. allowed: [acme]")
        self.allowed = frozenset(allowed) if allowed is not None else None

    def on_access(self, request):
        tenant = request.headers.get(self.header)
        if tenant is None:
            return request.respond(403, {"error": {"code": "tenant_required",
                                                   "message": f"send the {self.header} header"}})
        if self.allowed is not None and tenant not in self.allowed:
            return request.respond(403, {"error": {"code": "tenant_unknown", "message": "unknown tenant"}})
        request.set_header("x-tenant-checked", tenant)
        return None

    def on_response_head(self, request, response):
        response.set_header("x-served-for", request.headers.get(self.header, ""))

    def on_log(self, request):
        request.log("tenant", request.headers.get(self.header))
