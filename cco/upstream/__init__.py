"""Upstream side: keep-alive connection pools per origin and the HTTP/1.1 client connection."""

from cco.upstream.connection import Exchange, UpstreamConnection
from cco.upstream.pool import Origin, Pool, PoolManager

__all__ = ["Exchange", "Origin", "Pool", "PoolManager", "UpstreamConnection"]
