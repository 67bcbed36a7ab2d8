"""The Prometheus series of one server process, shared by every front end (native, RADIUS,
HTTP) and served on the HTTPS front end's /metrics.

One ``Metrics`` per AsyncVerifier (``verifier.metrics``), with its own registry. The hot path
only adds to plain integers (``FrontEndMetrics.decided``: a few additions and one bisect, no
lock: every front end of a process runs on its event loop's thread); collectors turn them and
what the verifier and the service layer count already (batches, throttled sources, refusals
queued for the audit log) into series at scrape time, and prometheus-client renders them.

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
import bisect
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

FRONT_ENDS = ("native", "radius", "http")
STORE_OPERATIONS = ("verify", "sync", "audit_flush", "health")
LATENCY_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_perf_counter = time.perf_counter
_bisect = bisect.bisect_left


class FrontEndMetrics:
    """One front end's counts (read by the registry's collector at scrape time)."""

    __slots__ = ("name", "accepted", "rejected", "failed", "buckets", "latency_sum", "refusals")

    def __init__(self, name):
        self.name = name
        self.accepted = self.rejected = self.failed = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)     # per bound (le), then +Inf
        self.latency_sum = 0.0
        self.refusals = {}                                    # reason -> count

    def decided(self, ok, started):
        """A verification submitted at ``started`` (time.perf_counter) was decided: ``ok``
        True / False, or None if its batch failed."""
        elapsed = _perf_counter() - started
        self.buckets[_bisect(LATENCY_BUCKETS, elapsed)] += 1
        self.latency_sum += elapsed
        if ok:
            self.accepted += 1
        elif ok is None:
            self.failed += 1
        else:
            self.rejected += 1

    def refused(self, reason):
        """A request refused before any verification (``reason``: a short fixed word)."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


class Metrics:
    def __init__(self, verifier=None):
        self.registry = registry = CollectorRegistry()
        self.native, self.radius, self.http = front_ends = tuple(FrontEndMetrics(name) for name in FRONT_ENDS)
        registry.register(_FrontEndCollector(front_ends))
        self.batch_size = Histogram("otpfast_verifier_batch_size", "Verifications per group-commit batch",
                                    registry=registry, buckets=BATCH_BUCKETS)
        store_errors = Counter("otpfast_store_errors", "Store operations that failed, by operation",
                               ["operation"], registry=registry)
        self.store_errors = {operation: store_errors.labels(operation) for operation in STORE_OPERATIONS}
        if verifier is not None:
            registry.register(_VerifierCollector(verifier))

    def exposition(self):
        return generate_latest(self.registry)


class _FrontEndCollector:
    def __init__(self, front_ends):
        self._front_ends = front_ends

    def collect(self):
        verifications = CounterMetricFamily("otpfast_verifications", "OTP verifications by front end and result",
                                            labels=["front_end", "result"])
        latency = HistogramMetricFamily("otpfast_verify_seconds", "Verification latency (request read to "
                                        "decision)", labels=["front_end"])
        refusals = CounterMetricFamily("otpfast_refusals", "Requests a front end refused before verifying, "
                                       "by reason", labels=["front_end", "reason"])
        for front_end in self._front_ends:
            name = front_end.name
            verifications.add_metric([name, "accept"], front_end.accepted)
            verifications.add_metric([name, "reject"], front_end.rejected)
            verifications.add_metric([name, "error"], front_end.failed)
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), front_end.buckets):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([name], buckets, front_end.latency_sum)
            for reason, count in sorted(front_end.refusals.items()):
                refusals.add_metric([name, reason], count)
        yield verifications
        yield latency
        yield refusals


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
