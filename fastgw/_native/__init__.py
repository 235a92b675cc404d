"""Cython hot path: route trie (router) and header programs (headers)."""
