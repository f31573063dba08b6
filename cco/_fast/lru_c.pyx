# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Byte-bounded LRU cache with per-entry TTL, compiled (twin of lru_py.py; its docstring states the rules).

Structure: a dict from key to a `_Node`, and the nodes on a circular doubly-linked list through a sentinel
(`_root.next` is the least recent, `_root.prev` the most recent). The dict owns the nodes; the list links are
borrowed `PyObject*`, so nodes never reference each other (no reference cycles, no recursive deallocation of a
long chain) and moving a node costs four pointer writes.

Invariant: whenever Python code can run, a node is linked exactly when it is in `_map`. Python code can run
inside any call out (the clock, a key's `__eq__`) and whenever an object is freed or a GC-tracked one allocated
(finalizers, including those of unrelated garbage). So every mutation allocates first (the new node), reads the
clock first, and never frees inside a mutation: removed nodes are parked in `_graveyard` (or held by a local)
and released only once the structure is consistent again — their values' finalizers may then re-enter the cache.
"""
cimport cython
from cpython.ref cimport PyObject

import time

from cco._fast.lru_py import ENTRY_OVERHEAD as ENTRY_OVERHEAD


@cython.final
@cython.freelist(64)
@cython.no_gc
cdef class _Node:
    # Not tracked by the cycle collector: a cache holds hundreds of thousands of nodes, and a tracked node
    # makes every full collection walk all of them (measured: ~25 µs per request and 40+ ms pauses on a filling
    # cache). A node cannot be part of a cycle: nothing outside this module references it, and the values the
    # proxy stores are the answers' bytes.
    cdef PyObject* prev  # borrowed; NULL while unlinked
    cdef PyObject* next  # borrowed
    cdef bytes key
    cdef object value
    cdef Py_ssize_t charged
    cdef double expires  # 0.0: never


@cython.final
cdef class LRU:
    cdef dict _map
    cdef _Node _root
    cdef list _graveyard
    cdef object _clock
    cdef Py_ssize_t _max
    cdef Py_ssize_t _overhead
    cdef Py_ssize_t _bytes
    cdef Py_ssize_t _evictions
    cdef Py_ssize_t _expirations

    def __cinit__(self, *args, **kwargs):
        self._root = _Node.__new__(_Node)
        self._root.prev = self._root.next = <PyObject*>self._root
        self._map = {}
        self._graveyard = []
        self._clock = time.monotonic

    def __init__(self, Py_ssize_t max_bytes, Py_ssize_t entry_overhead=ENTRY_OVERHEAD, clock=time.monotonic):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if entry_overhead < 0:
            raise ValueError("entry_overhead must be >= 0")
        self.clear()
        self._max = max_bytes
        self._overhead = entry_overhead
        self._clock = clock
        self._evictions = 0
        self._expirations = 0

    cdef object _live(self, object key):
        """The unexpired node under `key`, or None; an expired one is dropped and counted. The caller holds the
        returned reference, which keeps a dropped node alive until the cache is consistent."""
        cdef double now = self._clock()
        cdef object found = self._map.get(key)
        cdef _Node node
        if found is None:
            return None
        node = <_Node>found
        if node.expires != 0.0 and node.expires <= now:
            self._drop(node)
            self._expirations += 1
            return None
        return node

    cpdef object get(self, object key):
        cdef object found = self._live(key)
        cdef _Node node
        if found is None:
            return None
        node = <_Node>found
        if node.next != <PyObject*>self._root:
            self._unlink(node)
            self._link_last(node)
        return node.value

    cpdef object peek(self, object key):
        cdef object found = self._live(key)
        return None if found is None else (<_Node>found).value

    cpdef bint put(self, object key, object value, Py_ssize_t size, double ttl) except -1:
        cdef double now
        cdef Py_ssize_t charged
        cdef _Node node
        cdef object found
        if type(key) is not bytes:
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if size < 0:
            raise ValueError("size must be >= 0")
        now = self._clock()
        if size > self._max:  # also keeps the sum below from overflowing
            return False
        charged = size + len(<bytes>key) + self._overhead
        if charged > self._max:
            return False
        node = _Node.__new__(_Node)  # allocated before the structure is touched (see the module docstring)
        node.key = <bytes>key
        node.value = value
        node.charged = charged
        node.expires = now + ttl if ttl > 0 else 0.0
        found = self._map.get(key)
        if found is not None:
            self._drop(<_Node>found)  # held by `found` until return
        self._evict(self._max - charged, now)
        self._map[key] = node
        self._link_last(node)
        self._bytes += charged
        self._bury()
        return True

    cpdef object pop(self, object key):
        cdef object found = self._map.get(key)
        cdef _Node node
        if found is None:
            return None
        node = <_Node>found
        self._drop(node)
        return node.value

    def clear(self):
        cdef dict fresh = {}
        cdef dict old = self._map
        self._map = fresh
        self._root.prev = self._root.next = <PyObject*>self._root
        self._bytes = 0
        del old  # every node and value goes now, with the cache already empty

    def purge_expired(self):
        cdef double now = self._clock()
        cdef PyObject* p = self._root.next
        cdef _Node node
        cdef Py_ssize_t n = 0
        while p != <PyObject*>self._root:
            node = <_Node>p
            p = node.next
            if node.expires != 0.0 and node.expires <= now:
                self._drop(node)
                self._graveyard.append(node)
                n += 1
        self._expirations += n
        self._bury()
        return n

    def items(self):
        cdef double now = self._clock()
        cdef list live = []
        cdef PyObject* p = self._root.next
        cdef _Node node
        cdef object obj
        # Two passes: building tuples allocates (GC may run finalizers), so first collect strong references.
        while p != <PyObject*>self._root:
            node = <_Node>p
            if node.expires == 0.0 or node.expires > now:
                live.append(node)
            p = node.next
        cdef list out = []
        for obj in live:
            node = <_Node>obj
            out.append((node.key, node.value, node.expires))
        return out

    def __len__(self):
        return len(self._map)

    def __contains__(self, key):
        cdef double now = self._clock()
        cdef object found = self._map.get(key)
        cdef _Node node
        if found is None:
            return False
        node = <_Node>found
        return node.expires == 0.0 or node.expires > now

    @property
    def bytes_used(self):
        return self._bytes

    @property
    def max_bytes(self):
        return self._max

    @max_bytes.setter
    def max_bytes(self, Py_ssize_t value):
        if value < 0:
            raise ValueError("max_bytes must be >= 0")
        self._max = value
        if self._bytes > value:
            self._evict(value, self._clock())
            self._bury()

    @property
    def evictions(self):
        return self._evictions

    @property
    def expirations(self):
        return self._expirations

    # Structure

    cdef inline void _link_last(self, _Node node) noexcept:
        cdef _Node root = self._root
        node.prev = root.prev
        node.next = <PyObject*>root
        (<_Node>root.prev).next = <PyObject*>node
        root.prev = <PyObject*>node

    cdef inline void _unlink(self, _Node node) noexcept:
        (<_Node>node.prev).next = node.next
        (<_Node>node.next).prev = node.prev
        node.prev = node.next = NULL

    cdef int _drop(self, _Node node) except -1:
        """Unlinks `node` and removes it from the map; the caller keeps it alive until the structure is whole."""
        self._unlink(node)
        self._bytes -= node.charged
        del self._map[node.key]
        return 0

    cdef int _evict(self, Py_ssize_t limit, double now) except -1:
        """Drops least-recent entries into the graveyard until bytes_used <= limit."""
        cdef _Node victim
        while self._bytes > limit and self._root.next != <PyObject*>self._root:
            victim = <_Node>self._root.next
            if victim.expires != 0.0 and victim.expires <= now:
                self._expirations += 1
            else:
                self._evictions += 1
            self._drop(victim)
            self._graveyard.append(victim)
        return 0

    cdef int _bury(self) except -1:
        """Releases the removed nodes; their values' finalizers may re-enter the (consistent) cache."""
        if self._graveyard:
            del self._graveyard[:]
        return 0
