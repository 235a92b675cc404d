"""Config changes through the admin API: `PUT /config`,
`PATCH /config/routes/{name}`, `PATCH /config/clusters/{name}`, `GET /audit`.

A change is: the new declarative document (the body, or the current one with
one route or cluster merged), its redacted values put back
(document.keep_redacted), validated by the same reader as the file
(config.loader.from_document: the same messages, naming the key path and the fix,
relative paths taken from the config file's directory as the master will),
then applied by the ordinary reload: the document is handed to the master
(control.py, pending.json) and SIGHUP sent, exactly as `POST /reload` does,
so every worker of the new generation runs it, or none does. With
`?persist=true` it is also written over the config file (YAML, temp file +
rename; comments of the old file are not kept), the temp file written
before the reload so a file that can't be written refuses the change.

Every change, accepted or refused, is recorded in the audit ring (shared by
all workers, the last control.AUDIT_ENTRIES) and, with `admin.audit_log`,
appended to that file as a JSON line: who (the admin token's fingerprint,
or "anonymous"), the peer, what (a diff of the redacted documents), when,
the result and the new generation, or the reason of a refusal.

Without an admin token (the config then keeps the listener on loopback)
changes are refused unless `admin.allow_anonymous_changes: true`: any local
process could otherwise rewrite the routes.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
from urllib.parse import parse_qs

import orjson
import yaml

from fastgw.admin.control import Busy
from fastgw.admin.document import BadBody, diff, keep_redacted, merge_patch, parse_body
from fastgw.config.errors import ConfigError
from fastgw.config.loader import from_document

log = logging.getLogger("fastgw")

KINDS = {"routes": "route", "clusters": "cluster"}


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, errors: list[str] | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.errors, self.extra = status, code, message, errors, extra


class ConfigChanges:
    def __init__(self, server):
        self.server = server
        self.control = getattr(server.worker, "control", None)

    @property
    def config(self):
        return self.server.config

    # -- endpoints ------------------------------------------------------------------
    async def put_config(self, request):
        def change(current):
            document = self._body(request)
            # The whole GET /config answer is taken as it is: its `document`.
            if isinstance(document, dict) and "document" in document and "generation" in document:
                document = document["document"]
            return document
        return await self._apply(request, "PUT /config", change)

    async def patch_entry(self, request, kind: str, name: str):
        def change(current):
            patch = self._body(request)
            if not isinstance(patch, dict):
                raise Refused(400, "bad_body", f"a PATCH body is a mapping of the {KINDS[kind]}'s keys "
                                               "(a JSON merge patch: null removes a key)")
            document = copy.deepcopy(current)
            entries = document.get(kind) if isinstance(document, dict) else None
            if kind == "routes" and isinstance(entries, list):
                for index, entry in enumerate(entries):
                    if isinstance(entry, dict) and entry.get("name") == name:
                        entries[index] = merge_patch(entry, patch)
                        return document
            elif kind == "clusters" and isinstance(entries, dict) and name in entries:
                entries[name] = merge_patch(entries[name], patch)
                return document
            raise Refused(404, "not_found", f"there is no {KINDS[kind]} named {name!r}; "
                                            "add it with PUT /config (GET /config shows the document)")
        return await self._apply(request, f"PATCH /config/{kind}/{name}", change)

    async def show_audit(self, request):
        if self.control is None:
            return self.server.reply(200, {"total": 0, "entries": []})
        limit = _query(request).get("limit")
        try:
            limit = int(limit) if limit is not None else None
        except ValueError:
            return self.server.error(400, "bad_query", "limit is a number of entries, e.g. /audit?limit=20")
        total, entries = self.control.audit(limit)
        return self.server.reply(200, {"total": total, "entries": entries})

    # -- the change -------------------------------------------------------------------
    async def _apply(self, request, action: str, change):
        who = self._who()
        entry = {"time": _now(), "who": who, "peer": request.peer, "action": action}
        lock = None
        persist_temp = None
        try:
            self._check_allowed()
            try:
                lock = self.control.try_lock()
            except Busy:
                raise Refused(409, "change_in_progress", "another config change is being applied; "
                                                         "retry once it answered") from None
            current = self.config.document
            if current is None:
                raise Refused(400, "reload_unavailable", "started with --upstream: there is no declarative "
                                                         "config to change (use fastgw run --config FILE)")
            if self.server.generation != self.server.board.header().generation:
                raise Refused(409, "stale_generation", "this connection reached a worker of a replaced "
                                                       "generation; retry on a new connection")
            document, problems = keep_redacted(change(current), current)
            if problems:
                raise Refused(422, "invalid_config", f"{len(problems)} redacted value(s) stand for no current "
                              "value; the running config is unchanged",
                              [f"{action}: {path}: <redacted> keeps the current value, and there is none here "
                               f"(write the value in clear, or keep the place as GET /config shows it)"
                               for path in problems])
            try:
                # Relative paths as the master will read them: from the config file's directory.
                from_document(document, action, directory=os.path.dirname(os.path.abspath(self.config.source)))
            except ConfigError as error:
                raise Refused(422, "invalid_config", f"the new config is invalid ({len(error.errors)} error(s)); "
                              "the running config is unchanged", error.errors) from None
            entry["diff"] = diff(current, document)
            persist = _query(request).get("persist", "").lower() in ("1", "true", "yes")
            if persist:
                persist_temp = self._write_temp(document)
            change_id = self.control.put_pending(document)
            result = await self.server.request_reload()
            self.control.drop_pending()  # taken by the master, unless it never started the reload
            if result is None:
                # Not known to be refused: the master may still finish it.
                raise Refused(504, "reload_timeout", "the master did not finish the reload in time; GET /config "
                              "shows which config serves", outcome="unknown")
            if result.get("change") != change_id:
                # Another SIGHUP (an operator's) came between: the reload that
                # finished last was not this change's.
                raise Refused(409, "reload_interleaved", "another reload ran at the same time; GET /config "
                              "shows the config that serves, and the change may have to be made again")
            if not result.get("ok"):
                code = result.get("code", "reload_failed")
                raise Refused(400 if code == "invalid_config" else 500, code,
                              "the reload failed; the running config is unchanged",
                              result.get("errors", []), generation=result.get("generation"))
            if persist_temp is not None:
                os.replace(persist_temp, self.config.source)
                persist_temp = None
                _sync_dir(self.config.source)
            entry.update(result="accepted", generation=result["generation"], persisted=persist)
            self._record(entry)
            body = {"status": "applied", "generation": result["generation"], "diff": entry["diff"]}
            if persist:
                body["persisted"] = self.config.source
            return self.server.reply(200, body)
        except Refused as refusal:
            entry.update(result=refusal.extra.pop("outcome", "refused"), code=refusal.code, reason=refusal.message,
                         generation=self.server.board.header().generation)
            if refusal.errors:
                entry["errors"] = refusal.errors
            self._record(entry)
            extra = dict(refusal.extra)
            if refusal.errors is not None:
                extra["errors"] = refusal.errors
            return self.server.error(refusal.status, refusal.code, refusal.message, **extra)
        finally:
            if persist_temp is not None:
                _unlink(persist_temp)
            if lock is not None:
                os.close(lock)

    def _check_allowed(self):
        if self.control is None:
            raise Refused(503, "changes_unavailable", "this process has no master to reload it")
        if self.server.draining():
            raise Refused(503, "draining", "the gateway is draining; it does not change its config")
        if self.server.token is None and not self.config.admin.allow_anonymous_changes:
            raise Refused(403, "token_required", "config changes need an admin token: set admin.token_file "
                          "(or token_env, token), or admin.allow_anonymous_changes: true to let any local "
                          "process change the config")

    def _body(self, request):
        try:
            return parse_body(request.body, request.headers.get(b"content-type"))
        except BadBody as error:
            raise Refused(400, "bad_body", str(error)) from None

    def _who(self) -> str:
        token = self.server.token
        if token is None:
            return "anonymous"
        return "token:sha256:" + hashlib.sha256(token).hexdigest()[:16]

    def _write_temp(self, document) -> str:
        """The new file next to the config file (same directory, so the
        rename is atomic), written and synced before the change is applied."""
        path = self.config.source
        temp = f"{path}.fastgw-{os.getpid()}.tmp"
        text = (f"# Written by fastgw's admin API ({_now()}); comments of the previous file are not kept.\n"
                + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False))
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o600
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
        except OSError as error:
            _unlink(temp)
            raise Refused(500, "persist_failed", f"cannot write {temp} next to the config file: "
                                                 f"{error.strerror or error}; the running config is unchanged")
        return temp

    def _record(self, entry: dict):
        stored = self.control.append_audit(entry) if self.control is not None else entry
        path = self.config.admin.audit_log
        if path:
            try:
                with open(path, "ab") as out:  # one write per line, O_APPEND: whole lines
                    out.write(orjson.dumps(stored, option=orjson.OPT_NON_STR_KEYS) + b"\n")
            except OSError as error:
                log.error("admin audit log %s: cannot append: %s", path, error.strerror or error)


def _query(request) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(request.query).items()}


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _unlink(path: str):
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_dir(path: str):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
