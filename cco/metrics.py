"""`GET /metrics`: the proxy's own counters in the Prometheus text format, read at scrape time.

A custom collector turns the plain counters kept on the request path (cco.analytics.record.Counters, the cache's
ints, the writer's counts) into metric families when Prometheus asks, so serving traffic pays nothing for metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from cco.analytics.record import LATENCY_BUCKETS

if TYPE_CHECKING:
    from cco.app import App

CONTENT_TYPE = b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n"


class ProxyCollector:
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        counters = app.recorder.counters
        cache = app.cache

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter("cco_cache_hits_total", "Requests answered from the cache.", cache.hits if cache else 0)
        yield counter("cco_cache_misses_total", "Cacheable requests sent upstream.", cache.misses if cache else 0)
        yield counter("cco_cache_coalesced_total", "Requests that waited on an identical request in flight.",
                      cache.coalesced if cache else 0)
        yield counter("cco_cache_bypassed_total", "Requests that asked not to use the cache.",
                      cache.bypassed if cache else 0)
        yield counter("cco_cache_evictions_total", "Entries evicted to stay within the size bound.",
                      cache.lru.evictions if cache else 0)
        yield counter("cco_cache_expirations_total", "Entries dropped at the end of their TTL.",
                      cache.lru.expirations if cache else 0)
        yield GaugeMetricFamily("cco_cache_bytes", "Bytes the cache holds (entries, keys, overhead).",
                                value=cache.bytes_used if cache else 0)
        yield GaugeMetricFamily("cco_cache_entries", "Entries in the cache.", value=len(cache.lru) if cache else 0)
        yield counter("cco_cache_saved_usd_total", "USD the cache saved (what the original calls cost).",
                      cache.saved_cost if cache else 0.0)

        requests = CounterMetricFamily("cco_requests_total", "Proxied requests by provider, model and status.",
                                       labels=["provider", "model", "status"])
        for (provider, model, status), count in list(counters.requests.items()):
            requests.add_metric([provider, model, str(status)], count)
        yield requests
        tokens = CounterMetricFamily("cco_tokens_total", "Tokens of calls that reached a provider, by kind.",
                                     labels=["provider", "model", "kind"])
        for (provider, model, kind), count in list(counters.tokens.items()):
            tokens.add_metric([provider, model, kind], count)
        yield tokens
        cost = CounterMetricFamily("cco_cost_usd_total", "USD spent, at list prices.", labels=["provider", "model"])
        savings = CounterMetricFamily("cco_savings_usd_total", "USD saved by the cache, overrides and local models.",
                                      labels=["provider", "model"])
        for key, value in list(counters.cost.items()):
            cost.add_metric(list(key), value)
        for key, value in list(counters.savings.items()):
            savings.add_metric(list(key), value)
        yield cost
        yield savings
        latency = HistogramMetricFamily("cco_upstream_latency_seconds", "Time waiting on the provider per request.",
                                        labels=["provider"])
        for provider, series in list(counters.latency.items()):
            cumulative = 0.0
            buckets = []
            for bound, count in zip(LATENCY_BUCKETS, series):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", cumulative + series[len(LATENCY_BUCKETS)]))
            latency.add_metric([provider], buckets, sum_value=series[-1])
        yield latency
        overrides = CounterMetricFamily("cco_overrides_total", "Requests whose model an override rule rewrote.",
                                        labels=["from_model", "to_model"])
        for (source, target), count in list(counters.overrides.items()):
            overrides.add_metric([source, target], count)
        yield overrides
        writer = app.analytics
        yield counter("cco_analytics_rows_written_total", "Analytics rows committed to the database.",
                      writer.written if writer else 0)
        yield counter("cco_analytics_rows_dropped_total", "Analytics rows dropped (queue full or writer stopped).",
                      writer.dropped if writer else 0)
        yield GaugeMetricFamily("cco_analytics_rows_pending", "Analytics rows waiting to be written.",
                                value=writer.pending if writer else 0)


def registry_for(app: App) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(app))  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
