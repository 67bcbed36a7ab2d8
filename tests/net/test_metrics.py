"""net.metrics without a server: counts land in the right series, histogram buckets are
cumulative with ``le`` semantics, and the exposition is prometheus-client's own."""
import time

from prometheus_client.parser import text_string_to_metric_families

from otpfast.net.metrics import LATENCY_BUCKETS, Metrics


def samples(metrics):
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_metrics_front_ends_count_separately():
    metrics = Metrics()
    now = time.perf_counter()
    metrics.native.decided(True, now)
    metrics.http.decided(False, now)
    metrics.http.decided(None, now)
    metrics.radius.refused("unknown_client")
    metrics.radius.refused("unknown_client")
    metrics.store_errors["sync"].inc()
    metrics.batch_size.observe(3)
    got = samples(metrics)

    def value(name, **labels):
        return got[(name, tuple(sorted(labels.items())))]
    assert value("otpfast_verifications_total", front_end="native", result="accept") == 1
    assert value("otpfast_verifications_total", front_end="http", result="reject") == 1
    assert value("otpfast_verifications_total", front_end="http", result="error") == 1
    assert value("otpfast_verifications_total", front_end="radius", result="accept") == 0
    assert value("otpfast_refusals_total", front_end="radius", reason="unknown_client") == 2
    assert value("otpfast_verify_seconds_count", front_end="http") == 2
    assert value("otpfast_store_errors_total", operation="sync") == 1
    assert value("otpfast_verifier_batch_size_count") == 1


def test_metrics_latency_buckets_are_cumulative_le():
    metrics = Metrics()
    front_end = metrics.native
    for elapsed in (LATENCY_BUCKETS[0], LATENCY_BUCKETS[1] * 0.99, 5.0):
        front_end.decided(True, time.perf_counter() - elapsed)
    got = samples(metrics)
    bucket = {labels: v for (name, labels), v in got.items()
              if name == "otpfast_verify_seconds_bucket" and ("front_end", "native") in labels}
    le = {dict(labels)["le"]: v for labels, v in bucket.items()}
    # perf_counter moved on a little between the two reads: the first lands at or above its bound
    assert le["+Inf"] == 3 and le["1.0"] == 2 and le[repr(LATENCY_BUCKETS[2])] == 2
    assert sorted(le.values()) == [le[k] for k in sorted(le, key=lambda k: float(k))]
