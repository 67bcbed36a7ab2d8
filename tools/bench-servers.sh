#!/bin/bash
# The server benchmarks, several rounds, alternating one server process and N workers:
# the machine is shared and noisy, so compare configurations within the same rounds.
#   tools/bench-servers.sh [ROUNDS=5] [WORKERS=2] [OTPS=19200]
set -euo pipefail
rounds=${1:-5}; workers=${2:-2}; otps=${3:-19200}
cd "$(dirname "$0")/.."
for round in $(seq 1 "$rounds"); do
  for w in 1 "$workers"; do
    OTPFAST_BENCH_NET_WORKERS=$w OTPFAST_BENCH_RADIUS_WORKERS=$w OTPFAST_BENCH_NET_OTPS=$otps \
      python -m pytest bench/test_net.py bench/test_radius.py --benchmark-enable -s -q -p no:cacheprovider 2>&1 \
      | grep -E "pipelined|CPU per|RADIUS/UDP" | sed "s/^/round $round, $w worker(s): /"
  done
done
