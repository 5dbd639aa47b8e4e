#!/bin/bash
# Line, function and branch coverage of lib/ from the whole test suite.
# Not part of CI (it builds a tree of its own and runs every test once).
#
#   tests/coverage.sh                  build build-cov, run ctest, report
#   tests/coverage.sh -R unit_         arguments go to ctest
#   COV_EXCLUDE=e2e_test_soak tests/coverage.sh   tests left out (a regex)
#   COV_KEEP=1 tests/coverage.sh -R x  add to the counters of the last run
#                                      instead of starting from zero
#
# Needs gcc's gcov and gcovr (apt-get install gcovr). Prints gcovr's
# summary for lib/ and the functions of lib/ with the most branches never
# taken; the HTML report is left in $COV_DIR/coverage/index.html.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${COV_DIR:-$src/build-cov}
jobs=${COV_JOBS:-2}

command -v gcovr >/dev/null || {
  echo "coverage.sh: gcovr not found (apt-get install gcovr)" >&2
  exit 1
}
cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS=--coverage -DWSTUN_BUILD_TESTS=ON >/dev/null
cmake --build "$dir" -j"$jobs" >/dev/null
[ "${COV_KEEP:-0}" = 1 ] || find "$dir" -name '*.gcda' -delete
# the install test links the installed static library, instrumented here,
# into programs built without --coverage: it cannot pass in this tree
(cd "$dir" && ctest -j"$jobs" --output-on-failure \
  -E "^install\$${COV_EXCLUDE:+|$COV_EXCLUDE}" "$@") || \
  echo "coverage.sh: some tests failed; the figures cover what ran" >&2

mkdir -p "$dir/coverage"
gcovr -r "$src" --object-directory "$dir" --filter "$src/lib/" \
  --exclude-directories '.*/CompilerIdC$' --exclude-unreachable-branches -s \
  --html-details "$dir/coverage/index.html" >/dev/null
gcovr -r "$src" --object-directory "$dir" --filter "$src/lib/" \
  --exclude-directories '.*/CompilerIdC$' --exclude-unreachable-branches -s --txt "$dir/coverage/files.txt" |
  tail -3

# Per function, from gcov's JSON (the static and the shared library's
# objects are counted together): the 15 with the most untaken branches.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
find "$dir" -name 'wstun_*.gcda' -path '*/lib/*' | while read -r gcda; do
  (cd "$tmp" && mkdir -p "$(basename "$(dirname "$(dirname "$gcda")")")" &&
    cd "$(basename "$(dirname "$(dirname "$gcda")")")" &&
    gcov -j -b -o "$(dirname "$gcda")" "$gcda" >/dev/null 2>&1 || true)
done
python3 - "$tmp" <<'EOF'
import collections, glob, gzip, json, os, sys
lines = collections.defaultdict(int)   # (file, line) -> count
branches = collections.defaultdict(int)  # (file, line, i) -> count
funcs = {}                             # (file, name) -> (start, end)
for path in glob.glob(os.path.join(sys.argv[1], "*", "*.gcov.json.gz")):
    with gzip.open(path) as f:
        data = json.load(f)
    for fe in data["files"]:
        name = os.path.basename(fe["file"])
        if not fe["file"].startswith("lib/") and "/lib/" not in fe["file"]:
            continue
        for fn in fe["functions"]:
            funcs[(name, fn["demangled_name"])] = (fn["start_line"], fn["end_line"])
        for ln in fe["lines"]:
            lines[(name, ln["line_number"])] += ln["count"]
            for i, br in enumerate(ln["branches"]):
                branches[(name, ln["line_number"], i)] += br["count"]
rows = []
for (fname, fn), (a, b) in funcs.items():
    ls = [c for (f, n), c in lines.items() if f == fname and a <= n <= b]
    bs = [c for (f, n, i), c in branches.items() if f == fname and a <= n <= b]
    rows.append((sum(1 for c in bs if c == 0), fname, fn,
                 sum(1 for c in ls if c), len(ls),
                 sum(1 for c in bs if c), len(bs)))
rows.sort(key=lambda r: (-r[0], r[1], r[2]))
print("functions with the most branches never taken:")
print("  %-34s %-20s %9s %11s" % ("function", "file", "lines", "branches"))
for miss, fname, fn, lh, lt, bh, bt in rows[:15]:
    print("  %-34s %-20s %4d/%-4d %5d/%-5d" % (fn, fname, lh, lt, bh, bt))
never = sorted("%s (%s)" % (fn, f) for (f, fn), (a, b) in funcs.items()
               if not any(c for (ff, n), c in lines.items()
                          if ff == f and a <= n <= b))
print("functions never called: %d%s%s" % (len(never),
      (": " + ", ".join(never[:40])) if never else "",
      ", ..." if len(never) > 40 else ""))
EOF
echo "HTML report: $dir/coverage/index.html"
