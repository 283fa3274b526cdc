#!/usr/bin/env bash
# `make bench`: peers in their own venvs (outside the repo), then issue #6 and issue #2 benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/setup_peers.sh
"${MIXSTREAM_BENCH_VENV:-/work/venv-bench}/bin/python" benchmarks/bench.py "$@"
.venv/bin/python benchmarks/throughput.py
