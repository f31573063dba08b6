"""Selector for the compiled hot-path helpers and their pure-Python twins.

The choice is made once, at import: the Cython extensions when they were built and CCO_PURE_PYTHON is not "1",
otherwise the twins. Both expose the same names and pass the same tests (tests/test_fast_*.py run on both).
"""
import os

from cco._fast.key_py import JsonSyntaxError

IMPL: str

if os.environ.get("CCO_PURE_PYTHON") == "1":
    from cco._fast.hit_py import HitLane
    from cco._fast.key_py import RequestScan, scan_request
    from cco._fast.lru_py import LRU
    from cco._fast.sse_py import SseSplitter, parse_event

    IMPL = "pure"
else:
    try:  # all compiled or all pure: a partly built tree falls back to the twins for every module
        from cco._fast.hit_c import HitLane  # type: ignore[no-redef]
        from cco._fast.key_c import RequestScan, scan_request  # type: ignore[no-redef]
        from cco._fast.lru_c import LRU  # type: ignore[no-redef]
        from cco._fast.sse_c import SseSplitter, parse_event  # type: ignore[no-redef]

        IMPL = "compiled"
    except ImportError:
        from cco._fast.hit_py import HitLane
        from cco._fast.key_py import RequestScan, scan_request
        from cco._fast.lru_py import LRU
        from cco._fast.sse_py import SseSplitter, parse_event

        IMPL = "pure"

__all__ = ["IMPL", "LRU", "HitLane", "JsonSyntaxError", "RequestScan", "SseSplitter", "parse_event", "scan_request"]
