"""Upstream behaviours that break HTTP in the ways a gateway must survive:
interim (1xx) answers before the final one, and bytes nobody asked for after
a response. Mixed into the h11 upstream's session (`upstream._Session`);
selected by the first path segment like the others (`/interim/...`).
"""
from __future__ import annotations

import json

import h11


class FaultBehaviours:
    async def do_interim(self, req, query: dict) -> bool:
        """`codes=103,102`: those interim answers first (each 103 with a Link
        header), then `then=final` (default: a 200 echo), `close` (close the
        connection with no final answer) or `hang` (never answer)."""
        await self.read_body(req)
        codes = [int(c) for c in query.get("codes", "103").split(",") if c]
        for code in codes:
            link = [("Link", "</style.css>; rel=preload; as=style")] if code == 103 else []
            await self.send(h11.InformationalResponse(status_code=code, headers=link, reason=b"Interim"))
        then = query.get("then", "final")
        if then == "close":
            return False
        if then == "hang":
            await self.wait_peer_close(30)
            return False
        body = json.dumps(req.as_json()).encode()
        await self.respond(req, 200, [("Content-Type", "application/json")], body)
        return True

    async def do_excess(self, req, query: dict) -> bool:
        """A complete response followed, in the same write, by the start of a
        second one nobody asked for (`kind=partial`, default) or a whole one
        (`kind=whole`). Then the connection stays open, answering nothing more
        until the peer closes it: a gateway that pools it would hand the next
        client the leftover bytes or nothing at all."""
        await self.read_body(req)
        body = json.dumps(req.as_json()).encode()
        extra = (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGG" if query.get("kind") != "whole"
                 else b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
        await self.send_raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body) + body + extra)
        self.server._mark("excess-sent", self.conn)
        await self.wait_peer_close(30)
        return False
