# Declarations of router.pyx's types, so that another module (the request
# path, say) can cimport Router and call the trie without going through Python.

# One added route, as stored in a trie bucket.
cdef class _Entry:
    cdef readonly object target
    cdef readonly frozenset methods   # None: every method
    cdef readonly Py_ssize_t order
    cdef Py_ssize_t seq               # add() position: the final tiebreak
    cdef tuple names                  # template parameter names (str), in path order

    cdef inline bint accepts(self, bytes method)


# A trie node: reached by the static segments (and params) above it.
cdef class _Node:
    cdef dict children    # static segment bytes -> _Node; None until one is added
    cdef bytes only_key   # with exactly one static child: its segment, compared in place
    cdef _Node only_child
    cdef _Node param      # the `{param}` child (template trie only)
    cdef list routes      # templates ending here
    cdef list plain       # prefixes ending here without a trailing slash (`/api`)
    cdef list slash       # prefixes ending here with a trailing slash (`/api/`, `/`)

    cdef _Node child(self, bytes segment)


# All the routes of one host tier.
cdef class _Table:
    cdef dict exact         # path bytes -> list of _Entry
    cdef _Node templates
    cdef _Node prefixes
    cdef bint has_templates
    cdef bint has_prefixes

    cdef tuple match(self, bytes method, bytes path)
    cdef void collect(self, bytes path, list out) except *


cdef class Router:
    cdef dict _hosts          # exact host -> _Table
    cdef dict _wildcards      # suffix with its dot (b".example.com") -> _Table
    cdef _Table _any          # host-less routes; None until one is added
    cdef Py_ssize_t _longest_suffix
    cdef list _buckets        # every route list, sorted by freeze()
    cdef Py_ssize_t _count
    cdef bint _frozen
    # Set by freeze():
    cdef tuple _hostless      # (_any,) or ()
    cdef bint _no_host_tiers  # no exact or wildcard hosts: skip host handling
    cdef dict _host_cache     # raw request Host -> tuple of tiers to try

    cdef tuple _tiers(self, bytes host)
    cdef list _collect(self, bytes host, bytes path)
