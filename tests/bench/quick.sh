#!/usr/bin/env bash
# Kept for old habits: the quick benchmark is now `bench.sh --quick`
# (2 s per run, 1 round; same comparisons, stream and idle-tunnel tests).
#
#   bash tests/bench/quick.sh [build-dir]      (needs: nginx-light wrk curl python3)
exec bash "$(dirname "${BASH_SOURCE[0]}")/bench.sh" --quick "$@"
