#!/usr/bin/env python3
"""The call graph between libwstun's modules, from the symbols of the
compiled objects: module A depends on module B when A's object file uses a
symbol (a function or a variable) that B's object file defines. Calls made
through a callback table the caller was handed do not count, and that is
the point: a lower module calls a higher one back only through a table
the higher one handed it.

Usage: module_deps.py OBJECT_DIR [--dot]
  OBJECT_DIR holds lib/wstun_<module>.c.o (the static library's objects).
Prints every module with its dependencies and line count, then any cycle
(strongly connected component of more than one module), and every module
over TWIN_AT lines without its unit test twin tests/unit/wstun_<module>_test.c;
exits 1 when there is either."""

TWIN_AT = 200
import os
import subprocess
import sys


def symbols(obj):
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True,
                         text=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            used.add(name)
        elif kind in "TDBRCVW" or kind in "tdbr":
            if kind.isupper():
                defined.add(name)
    return defined, used


def sccs(graph):
    """Tarjan's algorithm."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    objdir = sys.argv[1]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    objs = {}
    for dirpath, _, files in os.walk(objdir):
        for f in files:
            if f.startswith("wstun_") and f.endswith(".c.o"):
                objs[f[len("wstun_"):-len(".c.o")]] = os.path.join(dirpath, f)
    if not objs:
        print(f"module_deps: no lib/wstun_*.c.o under {objdir}", file=sys.stderr)
        return 2
    # A module may be split over files: wstun_<module>_<part>.c is a part
    # of module <module> when that module exists (wstun_tunnel_v2.c), so
    # the calls between its files are not a cycle.
    stems = {}
    for stem in objs:
        base = next((b for b in objs if stem.startswith(b + "_")), stem)
        stems.setdefault(base, []).append(stem)
    defined, used = {}, {}
    for mod, parts in stems.items():
        defined[mod], used[mod] = set(), set()
        for stem in parts:
            d, u = symbols(objs[stem])
            defined[mod] |= d
            used[mod] |= u
    owner = {}
    for mod, syms in defined.items():
        for s in syms:
            owner[s] = mod
    graph = {m: set() for m in stems}
    for mod, syms in used.items():
        for s in syms:
            dep = owner.get(s)
            if dep and dep != mod:
                graph[mod].add(dep)

    def lines(mod):
        n = 0
        for stem in stems[mod]:
            for ext in (".c", ".h", "_int.h"):
                p = os.path.join(root, "lib", f"wstun_{stem}{ext}")
                if os.path.exists(p):
                    with open(p) as fh:
                        n += sum(1 for _ in fh)
        return n

    if "--dot" in sys.argv:
        print("digraph wstun {")
        for m in sorted(graph):
            for d in sorted(graph[m]):
                print(f'  "{m}" -> "{d}";')
        print("}")
        return 0
    for m in sorted(graph, key=lambda m: (-len(graph[m]), m)):
        deps = ", ".join(sorted(graph[m])) or "-"
        print(f"{m:10} {lines(m):5} lines  -> {deps}")
    cycles = [c for c in sccs(graph) if len(c) > 1]
    for c in cycles:
        print("CYCLE: " + " <-> ".join(c))
    orphans = [m for m in sorted(graph) if lines(m) > TWIN_AT and
               not os.path.exists(os.path.join(root, "tests", "unit",
                                               f"wstun_{m}_test.c"))]
    for m in orphans:
        print(f"NO UNIT TEST: {m} ({lines(m)} lines) has no "
              f"tests/unit/wstun_{m}_test.c")
    if cycles or orphans:
        return 1
    print(f"no dependency cycle between modules; every module over {TWIN_AT} "
          "lines has its unit test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
