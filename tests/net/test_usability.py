"""Usability faults of the servers (issue 10 item 7): shutdown statistics with p99 below
p50, ``-v`` logging no connections, IPv6 addresses printed without brackets."""
import asyncio
import logging
import random

import pytest

from otpfast.net.address import format_address
from otpfast.net.client import parse_address
from otpfast.net.verifier import AsyncVerifier, percentile


# -- percentiles ----------------------------------------------------------------------------
@pytest.mark.parametrize("values,p50,p99", [
    ([1.0], 1.0, 1.0),
    ([1.0, 9.0], 1.0, 9.0),                      # the old code printed p99 1.0 below p50 9.0
    ([1.0, 2.0, 3.0], 2.0, 3.0),
    (list(range(1, 101)), 50, 99),
    (list(range(1, 1001)), 500, 990),
])
def test_percentile_nearest_rank(values, p50, p99):
    assert percentile(values, 50) == p50 and percentile(values, 99) == p99


def test_percentile_is_ordered_for_any_sample():
    rng = random.Random(7)
    for n in range(1, 300):
        values = sorted(rng.random() for _ in range(n))
        assert values[0] <= percentile(values, 50) <= percentile(values, 99) <= percentile(values, 100) == values[-1]


def test_percentile_refuses_nonsense():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_verifier_stats_p99_not_below_p50():
    """Two batches, a fast one and a slow one: the statistics line puts p99 on the slow one."""
    verifier = AsyncVerifier.__new__(AsyncVerifier)
    verifier.verified, verifier.batches, verifier.busy = 2, 2, 0
    verifier.batch_log = [(1, 0.009, 0.008), (1, 0.001, 0.001)]
    stats = verifier.stats()
    assert stats["batch_ms"]["p50"] == pytest.approx(1.0) and stats["batch_ms"]["p99"] == pytest.approx(9.0)
    assert "p50 1.00 ms p99 9.00 ms" in verifier.stats_line()


# -- addresses ------------------------------------------------------------------------------
@pytest.mark.parametrize("host,port,text", [
    ("127.0.0.1", 8443, "127.0.0.1:8443"), ("::1", 8443, "[::1]:8443"),
    ("fe80::1%eth0", 1, "[fe80::1%eth0]:1"), ("localhost", 0, "localhost:0"),
])
def test_format_address_brackets_ipv6_and_parses_back(host, port, text):
    assert format_address(host, port) == text
    assert parse_address(text) == (host, port)


# -- -v: connections logged -----------------------------------------------------------------
def test_verbose_logs_each_connection_opened_and_closed(start, run, caplog):
    caplog.set_level(logging.INFO, logger="otpfast.net")

    async def main():
        async with start(kind="distribution") as running:
            async with running.connect() as client:
                await client.authenticate("verifier", b"verifier-secret")
                port = client._writer.get_extra_info("sockname")[1]
            for _ in range(100):            # the server sees the close a moment later
                if any("closed" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            return port

    port = run(main)
    messages = [r.getMessage() for r in caplog.records if r.name == "otpfast.net"]
    assert f"connection from 127.0.0.1:{port} opened" in messages
    assert f"connection from 127.0.0.1:{port} closed" in messages
    assert all("secret" not in m for m in messages)
