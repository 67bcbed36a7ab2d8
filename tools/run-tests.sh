#!/usr/bin/env bash
# The whole test suite: tests with the compiled core, tests with the pure-Python core
# (OTPFAST_NO_EXTENSIONS=1), and every benchmark once as a correctness test.
# Run from the repository root after `pip install '.[test]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest tests -q -p no:cacheprovider
OTPFAST_NO_EXTENSIONS=1 python3 -m pytest tests -q -p no:cacheprovider
python3 -m pytest bench --benchmark-disable -q -p no:cacheprovider
