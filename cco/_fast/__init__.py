"""Selector for the compiled hot-path helpers and their pure-Python twins.

The choice is made once, at import: the Cython extension when it was built and CCO_PURE_PYTHON is not "1",
otherwise the twin. Both expose the same names and pass the same tests (tests/test_fast_*.py run on both).
"""
import os

IMPL: str

if os.environ.get("CCO_PURE_PYTHON") == "1":
    from cco._fast.sse_py import SseSplitter, parse_event

    IMPL = "pure"
else:
    try:
        from cco._fast.sse_c import SseSplitter, parse_event  # type: ignore[no-redef]

        IMPL = "compiled"
    except ImportError:
        from cco._fast.sse_py import SseSplitter, parse_event

        IMPL = "pure"

__all__ = ["IMPL", "SseSplitter", "parse_event"]
