#!/usr/bin/env bash
# Head-of-line blocking, v1 vs v2, in one run, loopback only: the p50/p99
# and req/s of small requests on a token while a 1 GiB download on the same
# token is read slowly (~640 KiB/s), through a v1 and a v2 tunnel side by
# side, interleaved, with ratios; nginx is the backend, wrk makes the small
# requests; at most 60 s. The same as `bench.sh --hol` (options and
# environment there; README.md, "Head-of-line blocking").
#
#   bash tests/bench/hol.sh [build-dir]      (needs: nginx-light wrk curl python3)
exec bash "$(dirname "${BASH_SOURCE[0]}")/bench.sh" --hol "$@"
