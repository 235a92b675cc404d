"""A plugin that does nothing, for bench/callgrind-plugin.yaml: what one
Python hook on a route costs per request (PYTHONPATH=bench)."""


class NoOp:
    def __init__(self, config):
        pass

    def on_access(self, request):
        return None
