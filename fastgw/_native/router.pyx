# cython: language_level=3
"""Compiled route matcher: per-host segment tries, independent of the config types.

Build a `Router`, `add()` every route, `freeze()` once, then call `match()` per
request. A route is `(target, host, kind, path, methods, order)`; `target` is
any object and is handed back on a match.

Hosts
    The request host is compared case-insensitively with any port suffix
    removed (`Api.Example.com:8080` -> `api.example.com`, `[::1]:8080` ->
    `[::1]`) and one trailing dot dropped (`example.com.` -> `example.com`).
    Route hosts get the same lower-casing and trailing-dot removal; a route
    host carrying a port is rejected. A route host is one of

    * exact, `api.example.com`;
    * a wildcard, `*.example.com`: any host that ends in `.example.com` and is
      longer than it (`a.example.com`, `a.b.example.com`; not `example.com`);
    * None (or b""): any host.

    Routes are grouped into tiers, tried in this order: the exact-host table,
    then the wildcards whose suffix the host ends with, longest suffix first,
    then the host-less routes. The first tier holding a route that matches the
    method and path wins; a tier without one falls through to the next. A
    request with no host (None or b"", or only a port) can only match
    host-less routes.

Paths
    Matching is on the raw bytes of the path: the caller removes the query
    string first; nothing is percent-decoded, so `/a%2Fb` is one segment and
    `/caf%C3%A9` never equals `/café`. Segments are the pieces between `/`s:
    `/` is one empty segment, `/a/` is `a` then an empty segment, and `/a//b`
    has an empty middle segment. Trailing slashes are therefore significant
    for exact and template routes. Template and prefix routes only match
    paths that start with `/`.

    * EXACT: the path bytes are equal.
    * TEMPLATE: same number of segments; each static segment is equal and
      each `{name}` binds one whole, non-empty segment. A `{name}` must be a
      whole segment, names are unique within a template, at most MAX_PARAMS.
    * PREFIX, segment-aware: `/api` matches `/api` and `/api/...` but not
      `/apix`; `/api/` (trailing slash) matches `/api/` and `/api/...` but not
      `/api`; `/` matches every path that starts with `/`.

    Within a tier the priority is: exact routes, then templates, then prefixes.
    Among templates, at each segment (left to right) a static segment beats a
    `{param}`; templates with the same static/param shape are ordered by
    `order`. Among prefixes the longest prefix (in bytes) wins. Ties of all
    kinds go to the lower `order`, then to the earlier `add()`.

Methods
    `methods` is a frozenset of method bytes, compared exactly (methods are
    case-sensitive and nothing is implied: GET does not admit HEAD), or None
    for every method. A route whose methods exclude the request method is
    skipped and matching continues with the next candidate in priority order,
    through the following tiers too; so `GET /users/{id}` on one route and
    `DELETE /users/{id}` on another both work.

`match()` returns `(target, params)` or None; `params` is None when the
winning route has no parameters, else a tuple of `(name: str, value: bytes)`
pairs in path order. Its cost does not depend on the number of routes: one
dict lookup maps the raw Host to its tiers (a cache of at most 1024 hosts,
emptied when full), then in each tier tried an exact-path lookup and a walk
down the tries with one dict lookup per segment visited (a node with a single
child compares it in place), so 10,000 routes match about as fast as 10.

`allowed_methods()` (for choosing 405 over 404 on a miss) returns the sorted
union of the explicit methods of every route matching the host and path.
Routes with `methods=None` add nothing: if one matches the host and path,
`match()` cannot miss on it. `candidates()` lists every route matching the
host and path, whatever the method, in priority order; both are slow paths.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport memchr, memcmp

EXACT = 0
TEMPLATE = 1
PREFIX = 2

cdef enum:
    _EXACT = 0
    _TEMPLATE = 1
    _PREFIX = 2
    _MAX_PARAMS = 32
    _HOST_CACHE_SIZE = 1024   # distinct raw Host values remembered

MAX_PARAMS = _MAX_PARAMS

# The fields and cdef methods of the classes below are declared in router.pxd.


cdef class _Entry:
    """One added route, as stored in a trie bucket."""
    cdef inline bint accepts(self, bytes method):
        return self.methods is None or method in self.methods


cdef class _Node:
    """A trie node: reached by the static segments (and params) above it."""
    cdef _Node child(self, bytes segment):
        cdef _Node node
        if self.children is None:
            self.children = {}
        node = self.children.get(segment)
        if node is None:
            node = _Node()
            self.children[segment] = node
            if len(self.children) == 1:
                self.only_key, self.only_child = segment, node
            else:
                self.only_key, self.only_child = None, None
        return node


cdef class _Table:
    """All the routes of one host tier."""
    def __cinit__(self):
        self.exact = {}
        self.templates = _Node()
        self.prefixes = _Node()

    cdef tuple match(self, bytes method, bytes path):
        cdef list bucket
        cdef _Entry entry
        cdef tuple found
        cdef Py_ssize_t i, n
        cdef Py_ssize_t starts[_MAX_PARAMS]
        cdef Py_ssize_t ends[_MAX_PARAMS]
        if self.exact:
            bucket = <list>self.exact.get(path)
            if bucket is not None:
                for i in range(len(bucket)):
                    entry = <_Entry>bucket[i]
                    if entry.accepts(method):
                        return (entry.target, None)
        n = PyBytes_GET_SIZE(path)
        if n == 0 or PyBytes_AS_STRING(path)[0] != c'/':
            return None
        if self.has_templates:
            found = _match_template(self.templates, method, path, 1, n, starts, ends, 0)
            if found is not None:
                return found
        if self.has_prefixes:
            return _match_prefix(self.prefixes, method, path, 1, n, True)
        return None

    cdef void collect(self, bytes path, list out) except *:
        """Append (entry, params) for every route matching `path`, by priority."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
        cdef Py_ssize_t starts[_MAX_PARAMS]
        cdef Py_ssize_t ends[_MAX_PARAMS]
        bucket = self.exact.get(path)
        if bucket is not None:
            out.extend([(entry, None) for entry in bucket])
        if n == 0 or PyBytes_AS_STRING(path)[0] != c'/':
            return
        _collect_template(self.templates, path, 1, n, starts, ends, 0, out)
        _collect_prefix(self.prefixes, path, 1, n, True, out)


cdef inline Py_ssize_t _segment_end(bytes path, Py_ssize_t pos, Py_ssize_t n) noexcept:
    """Index of the `/` ending the segment that starts at `pos`, or `n`."""
    cdef const char* s = PyBytes_AS_STRING(path)
    cdef const char* slash = <const char*>memchr(s + pos, c'/', <size_t>(n - pos))
    return n if slash == NULL else slash - s


cdef inline bytes _slice(bytes data, Py_ssize_t start, Py_ssize_t end):
    """data[start:end] without the generic slice machinery; 0 <= start <= end <= len."""
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + start, end - start)


cdef inline _Node _static_child(_Node node, bytes path, Py_ssize_t pos, Py_ssize_t end):
    """The static child for the segment path[pos:end], or None. A lone child is
    compared in place; otherwise the segment is sliced for the dict lookup."""
    cdef Py_ssize_t size
    if node.only_key is not None:
        size = PyBytes_GET_SIZE(node.only_key)
        if size == end - pos and memcmp(PyBytes_AS_STRING(path) + pos,
                                        PyBytes_AS_STRING(node.only_key), <size_t>size) == 0:
            return node.only_child
        return None
    if node.children is None:
        return None
    return <_Node>node.children.get(_slice(path, pos, end))


cdef object _params(tuple names, bytes path, Py_ssize_t* starts, Py_ssize_t* ends, int count):
    cdef tuple params
    cdef object pair
    cdef int i
    if count == 0:
        return None
    params = PyTuple_New(count)
    for i in range(count):
        pair = (names[i], _slice(path, starts[i], ends[i]))
        Py_INCREF(pair)
        PyTuple_SET_ITEM(params, i, pair)
    return params


cdef tuple _first(list bucket, bytes method, bytes path,
                  Py_ssize_t* starts, Py_ssize_t* ends, int count):
    """The first entry of a bucket accepting `method`, as (target, params)."""
    cdef _Entry entry
    cdef Py_ssize_t i
    if bucket is None:
        return None
    for i in range(len(bucket)):
        entry = <_Entry>bucket[i]
        if entry.accepts(method):
            return (entry.target, _params(entry.names, path, starts, ends, count))
    return None


cdef tuple _match_template(_Node node, bytes method, bytes path, Py_ssize_t pos, Py_ssize_t n,
                           Py_ssize_t* starts, Py_ssize_t* ends, int count):
    """Depth-first, static child before `{param}` child; `pos` starts a segment."""
    cdef Py_ssize_t end = _segment_end(path, pos, n)
    cdef _Node child
    cdef tuple found
    child = _static_child(node, path, pos, end)
    if child is not None:
        if end == n:
            found = _first(child.routes, method, path, starts, ends, count)
        else:
            found = _match_template(child, method, path, end + 1, n, starts, ends, count)
        if found is not None:
            return found
    child = node.param
    if child is not None and end > pos:
        # count < _MAX_PARAMS: no template reaching this node has more params.
        starts[count] = pos
        ends[count] = end
        if end == n:
            return _first(child.routes, method, path, starts, ends, count + 1)
        return _match_template(child, method, path, end + 1, n, starts, ends, count + 1)
    return None


cdef tuple _match_prefix(_Node node, bytes method, bytes path, Py_ssize_t pos, Py_ssize_t n,
                         bint more):
    """Longest prefix first: recurse down the static segments, try buckets on the way back.

    `more`: the path has another segment (maybe empty) starting at `pos`.
    """
    cdef Py_ssize_t end
    cdef _Node child
    cdef tuple found
    if more and node.children is not None:
        end = _segment_end(path, pos, n)
        child = _static_child(node, path, pos, end)
        if child is not None:
            found = _match_prefix(child, method, path, end + 1, n, end < n)
            if found is not None:
                return found
    if more and node.slash is not None:
        found = _first(node.slash, method, path, NULL, NULL, 0)
        if found is not None:
            return found
    if node.plain is not None:
        return _first(node.plain, method, path, NULL, NULL, 0)
    return None


cdef void _collect_template(_Node node, bytes path, Py_ssize_t pos, Py_ssize_t n,
                            Py_ssize_t* starts, Py_ssize_t* ends, int count, list out) except *:
    cdef Py_ssize_t end = _segment_end(path, pos, n)
    cdef _Node child
    cdef _Entry entry
    child = _static_child(node, path, pos, end)
    if child is not None:
        if end == n:
            if child.routes is not None:
                for entry in child.routes:
                    out.append((entry, _params(entry.names, path, starts, ends, count)))
        else:
            _collect_template(child, path, end + 1, n, starts, ends, count, out)
    child = node.param
    if child is not None and end > pos:
        starts[count] = pos
        ends[count] = end
        if end == n:
            if child.routes is not None:
                for entry in child.routes:
                    out.append((entry, _params(entry.names, path, starts, ends, count + 1)))
        else:
            _collect_template(child, path, end + 1, n, starts, ends, count + 1, out)


cdef void _collect_prefix(_Node node, bytes path, Py_ssize_t pos, Py_ssize_t n, bint more,
                          list out) except *:
    cdef Py_ssize_t end
    cdef _Node child
    if more and node.children is not None:
        end = _segment_end(path, pos, n)
        child = _static_child(node, path, pos, end)
        if child is not None:
            _collect_prefix(child, path, end + 1, n, end < n, out)
    if more and node.slash is not None:
        out.extend([(entry, None) for entry in node.slash])
    if node.plain is not None:
        out.extend([(entry, None) for entry in node.plain])


cdef bytes _normalize_host(bytes host):
    """Lower-case, port and one trailing dot removed; `host` itself when already so."""
    cdef const char* s = PyBytes_AS_STRING(host)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(host)
    cdef Py_ssize_t end = n
    cdef Py_ssize_t i
    cdef const char* stop
    cdef bint upper = False
    if n and s[0] == c'[':  # IPv6 literal: the port follows the `]`
        stop = <const char*>memchr(s, c']', <size_t>n)
        if stop != NULL:
            end = stop - s + 1
    else:
        stop = <const char*>memchr(s, c':', <size_t>n)
        if stop != NULL:
            end = stop - s
    if end and s[end - 1] == c'.':
        end -= 1
    for i in range(end):
        if c'A' <= s[i] <= c'Z':
            upper = True
            break
    if end == n and not upper:
        return host
    if upper:
        return host[:end].lower()
    return host[:end]


def _sort_key(_Entry entry):
    return (entry.order, entry.seq)


cdef class Router:
    """Routes grouped by host tier, each tier a set of segment tries; see the module doc."""
    def __cinit__(self):
        self._hosts = {}
        self._wildcards = {}
        self._buckets = []
        self._hostless = ()
        self._host_cache = {}

    def __len__(self):
        return self._count

    def add(self, object target, bytes host, int kind, bytes path not None,
            frozenset methods, Py_ssize_t order):
        """Add a route; see the module doc. Raises ValueError on a malformed route."""
        cdef _Table table
        cdef _Node node
        cdef _Entry entry
        cdef list bucket
        cdef bytes segment, norm
        cdef tuple names = ()
        if self._frozen:
            raise RuntimeError("Router.add() after freeze()")
        if kind not in (_EXACT, _TEMPLATE, _PREFIX):
            raise ValueError(f"unknown route kind {kind!r}")
        if not path.startswith(b"/"):
            raise ValueError(f"route path {path!r} does not start with '/'")
        if methods is not None and not methods:
            raise ValueError("empty methods set: use None for every method")

        # The host tier.
        if not host:
            if self._any is None:
                self._any = _Table()
            table = self._any
        else:
            norm = _normalize_host(host)
            lowered = host.lower()
            if lowered.endswith(b"."):
                lowered = lowered[:len(lowered) - 1]
            if norm != lowered:
                raise ValueError(f"route host {host!r} must not have a port")
            if norm.startswith(b"*."):
                norm = norm[1:]
                if len(norm) < 2 or b"*" in norm:
                    raise ValueError(f"bad wildcard host {host!r}: write *.example.com")
                table = self._wildcards.get(norm)
                if table is None:
                    table = self._wildcards[norm] = _Table()
                self._longest_suffix = max(self._longest_suffix, len(norm))
            elif b"*" in norm:
                raise ValueError(f"bad host {host!r}: only a leading '*.' wildcard is allowed")
            else:
                table = self._hosts.get(norm)
                if table is None:
                    table = self._hosts[norm] = _Table()

        # The bucket within the tier.
        if kind == _EXACT:
            bucket = table.exact.get(path)
            if bucket is None:
                bucket = table.exact[path] = []
                self._buckets.append(bucket)
        elif kind == _TEMPLATE:
            node = table.templates
            found = []
            for segment in path[1:].split(b"/"):
                if b"{" in segment or b"}" in segment:
                    name = segment[1:len(segment) - 1]
                    if (len(segment) < 3 or not segment.startswith(b"{") or not segment.endswith(b"}")
                            or b"{" in name or b"}" in name):
                        raise ValueError(f"template {path!r}: a {{param}} must be a whole segment")
                    name = name.decode("ascii")
                    if name in found:
                        raise ValueError(f"template {path!r}: parameter {{{name}}} appears twice")
                    found.append(name)
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = node.child(segment)
            if len(found) > _MAX_PARAMS:
                raise ValueError(f"template {path!r} has more than {_MAX_PARAMS} parameters")
            names = tuple(found)
            if node.routes is None:
                node.routes = []
                self._buckets.append(node.routes)
            bucket = node.routes
            table.has_templates = True
        else:
            node = table.prefixes
            trailing = path.endswith(b"/")
            stem = path[1:len(path) - 1] if trailing else path[1:]
            if path != b"/":
                for segment in stem.split(b"/"):
                    node = node.child(segment)
            if trailing:
                if node.slash is None:
                    node.slash = []
                    self._buckets.append(node.slash)
                bucket = node.slash
            else:
                if node.plain is None:
                    node.plain = []
                    self._buckets.append(node.plain)
                bucket = node.plain
            table.has_prefixes = True

        entry = _Entry()
        entry.target = target
        entry.methods = methods
        entry.order = order
        entry.seq = self._count
        entry.names = names
        bucket.append(entry)
        self._count += 1

    def freeze(self):
        """Finish building: orders every bucket; `match()` needs it, `add()` is refused after."""
        for bucket in self._buckets:
            bucket.sort(key=_sort_key)
        self._hostless = (self._any,) if self._any is not None else ()
        self._no_host_tiers = not (self._hosts or self._wildcards)
        self._frozen = True

    def match(self, bytes host, bytes method not None, bytes path not None):
        """`(target, params)` of the winning route, or None; see the module doc."""
        cdef tuple tiers
        cdef tuple found
        cdef Py_ssize_t i
        if not self._frozen:
            raise RuntimeError("Router.match() before freeze()")
        if host is None or self._no_host_tiers:
            tiers = self._hostless
        else:
            tiers = <tuple>self._host_cache.get(host)
            if tiers is None:
                tiers = self._tiers(host)
                if len(self._host_cache) >= _HOST_CACHE_SIZE:
                    self._host_cache.clear()  # bounded: Host is client-controlled
                self._host_cache[host] = tiers
        for i in range(len(tiers)):
            found = (<_Table>tiers[i]).match(method, path)
            if found is not None:
                return found
        return None

    cdef tuple _tiers(self, bytes host):
        """The host tiers for a raw request host, in the order match() tries them."""
        cdef list tables = []
        cdef bytes norm
        cdef const char* s
        cdef Py_ssize_t i, n
        if host:
            norm = _normalize_host(host)
            n = PyBytes_GET_SIZE(norm)
            if n:
                table = self._hosts.get(norm)
                if table is not None:
                    tables.append(table)
                # A wildcard suffix starts at a dot after the first byte: leftmost is longest.
                s = PyBytes_AS_STRING(norm)
                for i in range(max(1, n - self._longest_suffix), n):
                    if s[i] == c'.':
                        table = self._wildcards.get(norm[i:])
                        if table is not None:
                            tables.append(table)
        return tuple(tables) + self._hostless

    cdef list _collect(self, bytes host, bytes path):
        cdef list out = []
        cdef _Table table
        if not self._frozen:
            raise RuntimeError("Router used before freeze()")
        for table in (self._hostless if host is None else self._tiers(host)):
            table.collect(path, out)
        return out

    def candidates(self, bytes host, bytes path not None):
        """Every route matching host and path, any method, in priority order:
        a list of `(target, params, methods)`. Slow path (diagnostics)."""
        cdef _Entry entry
        return [(entry.target, params, entry.methods)
                for entry, params in self._collect(host, path)]

    def allowed_methods(self, bytes host, bytes path not None):
        """Sorted method bytes some route would accept for this host and path.

        For choosing 405 over 404 after a miss. Routes accepting every method
        add nothing (see the module doc)."""
        cdef set methods = set()
        cdef _Entry entry
        for entry, _ in self._collect(host, path):
            if entry.methods is not None:
                methods.update(entry.methods)
        return sorted(methods)
