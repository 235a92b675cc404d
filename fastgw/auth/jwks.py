"""A JWKS URL's keys, kept fresh in one worker without blocking its loop.

Fetched when the worker starts, then again when the answer's cache lifetime
(`Cache-Control: max-age`, clamped to [jwks_min_refresh, jwks_max_refresh];
`jwks_refresh` without one) runs out. A token whose `kid` is not known asks
for one refetch (`refetch_for_kid`), at most once per kid_refetch_interval:
the issuer's key rotation is picked up at once, a flood of made-up kids
costs the issuer one request per interval.

A failed fetch keeps the last good keys (an issuer that is down does not
take the gateway's authentication with it) and is retried after
jwks_min_refresh; `stale` and the counters say so to /health and /metrics.
With OIDC discovery (`discovery`), the discovery document is fetched first
and its `jwks_uri` (checked: the document's issuer must be the configured
one) is then used as above; a JWKS answer other than 200 makes the next
fetch discover again.

Each worker fetches for itself: no cross-process state, and N workers cost
the issuer N small GETs per refresh.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from fastgw.auth import fetch
from fastgw.auth.keys import KeyFileError, parse_jwks

log = logging.getLogger("fastgw.auth")
_MAX_AGE = re.compile(rb"max-age\s*=\s*(\d+)", re.IGNORECASE)


class KeySet:
    def __init__(self, config, loop):
        self.source = config.key_source   # what names it in metrics and /health
        self.url = config.jwks_url        # the JWKS URL; with OIDC discovery, found first
        self.config = config
        self.loop = loop
        self.keys: dict = {}              # kid -> keys.Key; replaced whole by a good fetch
        self.version = 0                  # +1 whenever the set of keys changes
        self.on_change: list = []         # called then (verifiers empty their caches)
        self.loaded = False               # had keys once
        self.stale = False                # the last fetch failed
        self.last_error: str | None = None
        self.last_success: float | None = None   # time.time()
        self.fetches_ok = 0
        self.fetches_failed = 0
        self.kid_refetches = 0
        self._inflight: asyncio.Task | None = None
        self._timer = None
        self._last_kid_refetch = float("-inf")
        self._closed = False
        self._body = None                 # the last good document
        # First fetch as soon as the worker's loop runs (requests before it
        # ends wait for it: policy/auth.py).
        self._timer = loop.call_soon(self.fetch_now)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._inflight is not None:
            self._inflight.cancel()

    def fetch_now(self) -> asyncio.Task:
        """The fetch in flight, or a new one."""
        if self._inflight is None:
            self._inflight = self.loop.create_task(self._fetch())
        return self._inflight

    def pending(self) -> asyncio.Task | None:
        return self._inflight

    def refetch_for_kid(self) -> asyncio.Task | None:
        """A fetch to wait for before judging a token with an unknown kid,
        or None when one was made less than kid_refetch_interval ago."""
        if self._inflight is not None:
            return self._inflight
        now = time.monotonic()
        if now - self._last_kid_refetch < self.config.kid_refetch_interval:
            return None
        self._last_kid_refetch = now
        self.kid_refetches += 1
        return self.fetch_now()

    async def _fetch(self) -> None:
        cfg = self.config
        delay = cfg.jwks_min_refresh
        try:
            if self.url is None:
                self.url = await self._discover()
            status, headers, body = await fetch.get(self.url, cfg.jwks_timeout)
            if status != 200:
                if cfg.discovery_url is not None:
                    self.url = None  # the issuer may have moved its keys: discover again next time
                raise fetch.FetchError(f"status {status}")
            keys = parse_jwks(body)
            if not keys:
                raise fetch.FetchError("no usable signature key in the document")
        except (fetch.FetchError, KeyFileError) as err:
            self.fetches_failed += 1
            if not self.stale:
                log.warning("JWKS %s: fetch failed (%s); keeping %d last good keys, retrying every %gs",
                            self.source, err, len(self.keys), delay)
            self.stale = True
            self.last_error = str(err)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug here must not stop the refreshes
            self.fetches_failed += 1
            self.stale, self.last_error = True, repr(err)
            log.exception("JWKS %s: unexpected error", self.source)
        else:
            if self.stale:
                log.info("JWKS %s: fetched again (%d keys)", self.source, len(keys))
            changed = body != self._body
            self._body = body
            self.keys, self.loaded, self.stale, self.last_error = keys, True, False, None
            if changed:
                self.version += 1
                for listener in self.on_change:
                    listener()
            self.last_success = time.time()
            self.fetches_ok += 1
            delay = _lifetime(headers, cfg)
        finally:
            self._inflight = None
        if not self._closed:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(delay, self.fetch_now)

    async def _discover(self) -> str:
        """OIDC discovery: the document's jwks_uri (its issuer must be ours)."""
        cfg = self.config
        status, _, body = await fetch.get(cfg.discovery_url, cfg.jwks_timeout)
        if status != 200:
            raise fetch.FetchError(f"discovery: status {status}")
        try:
            document = json.loads(body)
        except ValueError:
            raise fetch.FetchError("discovery: not JSON") from None
        if not isinstance(document, dict):
            raise fetch.FetchError("discovery: not a JSON object")
        if cfg.issuer is not None and document.get("issuer") != cfg.issuer:
            raise fetch.FetchError(f"discovery: issuer {str(document.get('issuer'))[:80]!r} is not {cfg.issuer!r}")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s#]*)?", uri):
            raise fetch.FetchError("discovery: no usable jwks_uri")
        return uri

    def state(self) -> dict:
        """For /health: what the worker knows."""
        return {"url": self.source, "jwks_uri": self.url, "keys": len(self.keys), "stale": self.stale or not self.loaded,
                "last_error": self.last_error, "last_success": self.last_success}


def _lifetime(headers: dict, cfg) -> float:
    match = _MAX_AGE.search(headers.get(b"cache-control", b""))
    if match is None:
        return cfg.jwks_refresh
    return min(max(float(match.group(1)), cfg.jwks_min_refresh), cfg.jwks_max_refresh)


class StaticKeys:
    """keys_file's keys (read at config load, so a reload re-reads them)."""
    loaded = True
    stale = False
    version = 0

    def __init__(self, keys: dict):
        self.keys = keys

    def refetch_for_kid(self):
        return None

    def pending(self):
        return None
