"""The gateway's /metrics, through prometheus_client (the library vLLM itself exports with).

Series names and labels are the ones the Grafana dashboard and `devloop dashboard-check` read:
devloop_gateway_* are the gateway's own instruments, updated on the request path; devloop_cache_*
are the cache's counters, read from its stats when Prometheus scrapes (a custom collector, so the
cache keeps one set of counters and the exposition never disagrees with /cache/stats).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

# From a local-tier hit (sub-millisecond) to a long CPU generation (minutes).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                    60, 120, 300, 600)


class CacheCollector:
    """devloop_cache_* from the cache's stats snapshot, at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        yield CounterMetricFamily(
            "devloop_cache_requests", "Cache lookups (one per cacheable request).",
            value=stats["requests"],
        )
        hits = CounterMetricFamily("devloop_cache_hits", "Cache hits by tier.", labels=["tier"])
        hits.add_metric(["local"], stats["hits_local"])
        hits.add_metric(["redis"], stats["hits_redis"])
        yield hits
        for name, key, help_text in (
            ("devloop_cache_misses", "misses", "Cache lookups that found nothing."),
            ("devloop_cache_stores", "stores", "Answers stored."),
            ("devloop_cache_evictions", "evictions",
             "Entries evicted from the local tier by its entry or byte bound."),
            ("devloop_cache_redis_errors", "redis_errors",
             "Failed or timed-out Redis calls (each one degrades to the local tier)."),
            ("devloop_cache_redis_reconnects", "redis_reconnects",
             "Times Redis came back after failing."),
        ):
            yield CounterMetricFamily(name, help_text, value=stats[key])
        yield GaugeMetricFamily(
            "devloop_cache_redis_degraded",
            "1 while Redis is failing and the cache serves from the local tier only.",
            value=1 if stats["redis"] == "degraded" else 0,
        )
        yield GaugeMetricFamily(
            "devloop_cache_local_entries", "Entries in the local tier.",
            value=stats["local_entries"],
        )
        yield GaugeMetricFamily(
            "devloop_cache_local_bytes", "Bytes of answers in the local tier.",
            value=stats["local_bytes"],
        )


class ReplicaCollector:
    """devloop_gateway_upstream_replicas{upstream, state} and the requests in flight per upstream,
    from the routing pool at scrape time (the same view /health shows)."""

    def __init__(self, replicas: Callable[[], list[tuple[str, str, int]]]) -> None:
        self._replicas = replicas  # -> [(configured upstream, state, requests in flight)]

    def collect(self) -> Iterator[Metric]:
        counts: dict[tuple[str, str], int] = {}
        inflight: dict[str, int] = {}
        for upstream, state, outstanding in self._replicas():
            counts[(upstream, state)] = counts.get((upstream, state), 0) + 1
            inflight[upstream] = inflight.get(upstream, 0) + outstanding
        replicas = GaugeMetricFamily(
            "devloop_gateway_upstream_replicas",
            "Engine replicas by configured upstream and state (unknown, ready, down, gone).",
            labels=["upstream", "state"],
        )
        for (upstream, state), count in sorted(counts.items()):
            replicas.add_metric([upstream, state], count)
        yield replicas
        outstanding = GaugeMetricFamily(
            "devloop_gateway_upstream_outstanding_requests",
            "Requests sent to an upstream's replicas and not finished (what least-outstanding "
            "routing compares).", labels=["upstream"],
        )
        for upstream, count in sorted(inflight.items()):
            outstanding.add_metric([upstream], count)
        yield outstanding


class GatewayMetrics:
    """The instruments, in a registry of their own (not the process-global one, so that two
    gateways in one process, as in tests, never share or clash)."""

    def __init__(self, cache_snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "devloop_gateway_requests", "Requests answered, by route and status.",
            ["route", "code"], registry=self.registry,
        )
        self.duration = Histogram(
            "devloop_gateway_request_duration_seconds", "Time spent answering, by route.",
            ["route"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        # upstream: a configured upstream URL (not a pod IP, which changes with every restart);
        # model: one some engine lists, "other" or "none": both labels stay bounded.
        self.upstream_requests = Counter(
            "devloop_gateway_upstream_requests",
            "Requests sent to an engine (each attempt), by configured upstream and model.",
            ["upstream", "model"], registry=self.registry,
        )
        self.upstream_retries = Counter(
            "devloop_gateway_upstream_retries",
            "Requests sent again to another replica after one failed before answering "
            "(connect, disconnect, status 503, vLLM shutting down), by upstream and reason.",
            ["upstream", "reason"], registry=self.registry,
        )
        self.upstream_errors = Counter(
            "devloop_gateway_upstream_errors",
            "Engine calls that failed before an answer (connect, timeout, disconnect).",
            ["kind"], registry=self.registry,
        )
        self.coalesced = Counter(
            "devloop_gateway_coalesced",
            "Requests that waited for an identical in-flight miss instead of calling the engine.",
            registry=self.registry,
        )
        self.registry.register(CacheCollector(cache_snapshot))
        # process_cpu_seconds_total, process_resident_memory_bytes... as every exporter has.
        ProcessCollector(registry=self.registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def routed(self, upstream: str, model: str) -> None:
        self.upstream_requests.labels(upstream, model).inc()

    def retried(self, upstream: str, reason: str) -> None:
        self.upstream_retries.labels(upstream, reason).inc()

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors.labels(kind).inc()

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape body and its content type, negotiated from the Accept header (Prometheus
        text format, or OpenMetrics when the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def total(self, name: str) -> int:
        """A counter's current value by its series name, summed over its labels (for
        /cache/stats)."""
        return int(sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        ))
