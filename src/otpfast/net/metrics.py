"""The Prometheus series of one server process, shared by every front end (native, RADIUS,
HTTP) and served on the HTTPS front end's /metrics.

One ``Metrics`` per AsyncVerifier (``verifier.metrics``), with its own registry. The hot
path touches only pre-bound children (``FrontEndMetrics``: one counter increment and one
histogram observation per verification); everything the verifier and the service layer
count already (batches, throttled sources, refusals queued for the audit log) is read at
scrape time by collectors and costs nothing per request.

Series (``_total`` added to counters by the exposition):
  otpfast_verifications{front_end, result}      accept | reject | error
  otpfast_verify_seconds{front_end}             request read -> decision (histogram)
  otpfast_refusals{front_end, reason}           requests a front end refused before any
                                                verification (403, protocol errors, drops)
  otpfast_service_refusals{event, reason}       refusals the service layer audited (failed
                                                logins, throttled, revoked credentials...)
  otpfast_throttled{kind}                       sources / clients throttled now (gauge)
  otpfast_verifier_batch_size                   verifications per group commit (histogram)
  otpfast_verifier_{verifications,batches,busy} the group-commit writer's own counters
  otpfast_store_errors{operation}               store operations that failed
"""
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

FRONT_ENDS = ("native", "radius", "http")
STORE_OPERATIONS = ("verify", "sync", "audit_flush", "health")
LATENCY_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_perf_counter = time.perf_counter


class FrontEndMetrics:
    """One front end's pre-bound series."""

    __slots__ = ("name", "accepted", "rejected", "failed", "latency", "_refusals", "_by_reason")

    def __init__(self, name, verifications, latency, refusals):
        self.name = name
        self.accepted = verifications.labels(name, "accept")
        self.rejected = verifications.labels(name, "reject")
        self.failed = verifications.labels(name, "error")
        self.latency = latency.labels(name)
        self._refusals = refusals
        self._by_reason = {}

    def decided(self, ok, started):
        """A verification submitted at ``started`` (time.perf_counter) was decided: ``ok``
        True / False, or None if its batch failed."""
        self.latency.observe(_perf_counter() - started)
        if ok:
            self.accepted.inc()
        elif ok is None:
            self.failed.inc()
        else:
            self.rejected.inc()

    def refused(self, reason):
        """A request refused before any verification (``reason``: a short fixed word)."""
        child = self._by_reason.get(reason)
        if child is None:
            child = self._by_reason[reason] = self._refusals.labels(self.name, reason)
        child.inc()


class Metrics:
    def __init__(self, verifier=None):
        self.registry = registry = CollectorRegistry()
        verifications = Counter("otpfast_verifications", "OTP verifications by front end and result",
                                ["front_end", "result"], registry=registry)
        latency = Histogram("otpfast_verify_seconds", "Verification latency (request read to decision)",
                            ["front_end"], registry=registry, buckets=LATENCY_BUCKETS)
        refusals = Counter("otpfast_refusals", "Requests a front end refused before verifying, by reason",
                           ["front_end", "reason"], registry=registry)
        self.native, self.radius, self.http = (FrontEndMetrics(name, verifications, latency, refusals)
                                               for name in FRONT_ENDS)
        self.batch_size = Histogram("otpfast_verifier_batch_size", "Verifications per group-commit batch",
                                    registry=registry, buckets=BATCH_BUCKETS)
        store_errors = Counter("otpfast_store_errors", "Store operations that failed, by operation",
                               ["operation"], registry=registry)
        self.store_errors = {operation: store_errors.labels(operation) for operation in STORE_OPERATIONS}
        if verifier is not None:
            registry.register(_VerifierCollector(verifier))

    def exposition(self):
        return generate_latest(self.registry)


class _VerifierCollector:
    """Read at scrape time: the group-commit writer's counters and the service layer's
    refusal and throttle counts (no cost on the hot path)."""

    def __init__(self, verifier):
        self._verifier = verifier

    def collect(self):
        verifier = self._verifier
        yield CounterMetricFamily("otpfast_verifier_verifications", "Verifications decided, all front ends",
                                  value=verifier.verified)
        yield CounterMetricFamily("otpfast_verifier_batches", "Group-commit batches", value=verifier.batches)
        yield CounterMetricFamily("otpfast_verifier_busy", "Batches that found the write lock taken",
                                  value=verifier.busy)
        distribution = verifier.distribution
        refusals = CounterMetricFamily("otpfast_service_refusals",
                                       "Refusals the service layer audited, by event and reason",
                                       labels=["event", "reason"])
        for (event, reason), count in sorted(distribution.refusal_counts.items()):
            refusals.add_metric([event, reason], count)
        yield refusals
        throttled = GaugeMetricFamily("otpfast_throttled", "Sources and clients refused now for failing "
                                      "too often", labels=["kind"])
        sources, clients = distribution.throttled_counts()
        throttled.add_metric(["source"], sources)
        throttled.add_metric(["client"], clients)
        yield throttled


__all__ = ["Metrics", "FrontEndMetrics", "FRONT_ENDS"]
