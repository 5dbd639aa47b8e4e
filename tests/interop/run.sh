#!/usr/bin/env bash
# Runs the interop tests (tests/interop/TESTS) against the real Go wstunnel
# outside ctest: builds the Go binary once (interop.py, build.sh retried up
# to 3 times), then each file with the apps of BUILD_DIR (default build/).
#   bash tests/interop/run.sh [BUILD_DIR] [test_x.py ...]
# Without ../shared/reference beside the repository it prints one line and
# exits 0 (CI=true: exits 1). The last line is "interop: N passed, N failed".
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-$ROOT/build}
shift || true
export WSTUN_BIN_DIR=${WSTUN_BIN_DIR:-$BUILD/apps} PYTHONDONTWRITEBYTECODE=1
export WSTUN_SKIP_RC=77
go=$(python3 "$ROOT/tests/interop/interop.py")
rc=$?
if [ "$rc" = 77 ]; then echo "$go"; exit 0; fi
[ "$rc" = 0 ] || { echo "interop: building the Go wstunnel failed"; exit 1; }
export WSTUN_GO_BIN=$go
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < "$ROOT/tests/interop/TESTS"
passed=0 failed=0
for f in "${files[@]}"; do
  if timeout 900 python3 "$ROOT/tests/interop/$(basename "$f")"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "interop: $f FAILED" >&2
  fi
done
echo "interop: $passed passed, $failed failed"
[ "$failed" = 0 ]
