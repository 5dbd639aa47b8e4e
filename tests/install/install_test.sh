#!/usr/bin/env bash
# Installs a wstun build into a temporary prefix and uses it the way an
# embedder and a packager would:
#   - the layout: headers, static and shared library (SONAME), wstun.pc, the
#     CMake package, programs, man pages, systemd units, env file examples;
#   - the shared library exports only the public wstun_* API;
#   - an out-of-tree program (consumer.c) built with pkg-config (shared and
#     --static) and with find_package(wstun CONFIG) (wstun::wstun and
#     wstun::wstun_static) runs, prints wstun_version() and checks it against
#     WSTUN_VERSION_STRING;
#   - the installed man pages render without warnings and document every
#     flag; the example env files list every flag; the units load every
#     credential (cred:ID) the docs name; systemd-analyze verify (when
#     installed) finds nothing to say about the units.
#
#   install_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]
#
# SANITIZE is the build's WSTUN_SANITIZE (ON/OFF): an instrumented libwstun
# needs instrumented programs, so the consumers are then built with
# -fsanitize=address,undefined as well.
set -euo pipefail

BUILD=$(cd "${1:?usage: install_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]}" && pwd)
SRC=$(cd "${2:?usage: install_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]}" && pwd)
SANITIZE=${3:-OFF}
HERE=$SRC/tests/install

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wstun-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix
FAILED=0

step() { printf '\n--- %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; FAILED=$((FAILED + 1)); }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# the compiler of the build, so that the consumers match the library
CC=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
CC=${CC:-cc}
SAN_FLAGS=()
case "$SANITIZE" in
ON | on | 1 | TRUE | true | YES | yes)
  SAN_FLAGS=("-fsanitize=address,undefined" -fno-omit-frame-pointer
             -fno-sanitize-recover=undefined)
  echo "sanitizer build: consumers get ${SAN_FLAGS[*]}"
  ;;
esac

step "cmake --install $BUILD --prefix $PREFIX"
cmake --install "$BUILD" --prefix "$PREFIX" >"$TMP/install.log" 2>&1 ||
  { cat "$TMP/install.log" >&2; die "cmake --install"; }
ok "installed $(wc -l <"$BUILD/install_manifest.txt") files"

# --- layout -----------------------------------------------------------------
step "layout"
PC=$(find "$PREFIX" -path '*/pkgconfig/wstun.pc' | head -n 1)
[ -n "$PC" ] || die "no wstun.pc under $PREFIX"
LIBDIR=$(dirname "$(dirname "$PC")")
echo "libdir: ${LIBDIR#"$PREFIX"/}"
VERSION_H=$PREFIX/include/wstun/version.h
[ -f "$VERSION_H" ] || die "no include/wstun/version.h"
VERSION=$(sed -n 's/^#define WSTUN_VERSION_STRING "\(.*\)"$/\1/p' "$VERSION_H")
MAJOR=$(sed -n 's/^#define WSTUN_VERSION_MAJOR \([0-9]*\)$/\1/p' "$VERSION_H")
if [ -z "$VERSION" ] || [ -z "$MAJOR" ]; then die "no version in version.h"; fi
echo "version: $VERSION (major $MAJOR)"

for f in include/wstun/wstun.h include/wstun/version.h \
         "${LIBDIR#"$PREFIX"/}/libwstun.a" "${LIBDIR#"$PREFIX"/}/libwstun.so" \
         "${LIBDIR#"$PREFIX"/}/libwstun.so.$MAJOR" \
         "${LIBDIR#"$PREFIX"/}/libwstun.so.$VERSION" \
         "${LIBDIR#"$PREFIX"/}/cmake/wstun/wstunConfig.cmake" \
         "${LIBDIR#"$PREFIX"/}/cmake/wstun/wstunConfigVersion.cmake" \
         "${LIBDIR#"$PREFIX"/}/cmake/wstun/wstunTargets.cmake" \
         bin/wstunsrv bin/wstuncli bin/wstunnel \
         share/man/man1/wstunsrv.1 share/man/man1/wstuncli.1 \
         share/man/man1/wstunnel.1 \
         lib/systemd/system/wstunsrv.service lib/systemd/system/wstuncli.service \
         share/doc/wstun/examples/wstunsrv.env \
         share/doc/wstun/examples/wstuncli.env \
         share/doc/wstun/examples/wstuncli.conf; do
  if [ -e "$PREFIX/$f" ]; then ok "$f"; else fail "missing $f"; fi
done
for p in wstunsrv wstuncli wstunnel; do
  [ -x "$PREFIX/bin/$p" ] || continue
  out=$("$PREFIX/bin/$p" --version 2>&1) || fail "$p --version failed"
  case "$out" in *"$VERSION"*) ok "$p --version: $out" ;;
                 *) fail "$p --version: '$out' lacks $VERSION" ;; esac
done

# --- the shared library -------------------------------------------------------
step "shared library: SONAME and exported symbols"
SO=$LIBDIR/libwstun.so.$VERSION
soname=$(objdump -p "$SO" | awk '$1 == "SONAME" { print $2 }')
if [ "$soname" = "libwstun.so.$MAJOR" ]; then ok "SONAME $soname"
else fail "SONAME '$soname', want libwstun.so.$MAJOR"; fi
[ "$(readlink "$LIBDIR/libwstun.so")" = "libwstun.so.$MAJOR" ] ||
  fail "libwstun.so should point to libwstun.so.$MAJOR"

nm -D --defined-only "$SO" | awk '{ print $NF }' | sort >"$TMP/symbols"
# public API only: wstun_ but not wstun__ (private); the linker's own
# markers. An instrumented (ASan) library also defines the sanitizer's
# per-DSO registration symbols.
allowed='^(wstun_[A-Za-z0-9][A-Za-z0-9_]*|_init|_fini|_edata|_end|__bss_start)$'
if [ ${#SAN_FLAGS[@]} -gt 0 ]; then
  allowed='^(wstun_[A-Za-z0-9][A-Za-z0-9_]*|_init|_fini|_edata|_end|__bss_start|__odr_asan[._].*|___asan_globals_registered|__asan_.*)$'
fi
bad=$(grep -Ev "$allowed" "$TMP/symbols" || true)
if [ -n "$bad" ]; then
  fail "exported symbols outside the public API:"
  printf '%s\n' "$bad" | sed 's/^/  /' >&2
else
  ok "$(grep -c '^wstun_' "$TMP/symbols") symbols exported, all wstun_*"
fi
# every function the header declares is exported
grep -o 'WSTUN_EXTERN[^(]*(' "$PREFIX/include/wstun/wstun.h" |
  grep -o 'wstun_[a-z_0-9]*($' | tr -d '(' | sort -u >"$TMP/declared"
missing=$(comm -23 "$TMP/declared" "$TMP/symbols")
if [ -n "$missing" ]; then
  fail "declared in wstun.h but not exported: $missing"
else
  ok "all $(wc -l <"$TMP/declared") functions of wstun.h are exported"
fi

# --- pkg-config ---------------------------------------------------------------
step "pkg-config"
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
modversion=$(pkg-config --modversion wstun)
if [ "$modversion" = "$VERSION" ]; then ok "--modversion $modversion"
else fail "--modversion '$modversion', want $VERSION"; fi
cflags=$(pkg-config --cflags wstun)
libs=$(pkg-config --libs wstun)
static_libs=$(pkg-config --static --libs wstun)
echo "cflags: $cflags"
echo "libs: $libs"
echo "static libs: $static_libs"
case " $cflags " in *" -I$PREFIX/include "*) ok "cflags name the prefix" ;;
                    *) fail "cflags lack -I$PREFIX/include" ;; esac
case " $libs " in *" -L$LIBDIR "*) ;; *) fail "libs lack -L$LIBDIR" ;; esac
case " $libs " in *" -lwstun "*) ok "libs name the prefix" ;;
                  *) fail "libs lack -lwstun" ;; esac
for l in -lwstun -luv -lwslay -lmbedtls -lmbedx509 -lmbedcrypto -ljansson; do
  case " $static_libs " in *" $l "*) ;; *) fail "--static --libs lacks $l" ;; esac
done
ok "--static --libs lists the private dependencies"

# run_consumer NAME BINARY: runs it against the installed library and checks
# its output
run_consumer() {
  local name=$1 bin=$2 out
  if ! out=$(LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
             timeout 60 "$bin" 2>&1); then
    fail "$name: exited with an error:"
    printf '%s\n' "$out" | sed 's/^/  /' >&2
    return
  fi
  if [ "$(printf '%s\n' "$out" | head -n 1)" != "wstun $VERSION" ]; then
    fail "$name: printed '$out', want 'wstun $VERSION' first"
    return
  fi
  ok "$name: $(printf '%s' "$out" | tr '\n' ';')"
}

# the shared consumers must load the installed library, not another one
check_loads_installed() {
  local name=$1 bin=$2 lib
  lib=$(LD_LIBRARY_PATH=$LIBDIR ldd "$bin" | awk '/libwstun\.so/ { print $3 }')
  if [ "$lib" = "$LIBDIR/libwstun.so.$MAJOR" ]; then ok "$name loads $lib"
  else fail "$name loads '$lib', want $LIBDIR/libwstun.so.$MAJOR"; fi
}

# no -std=c11: <uv.h> needs POSIX types that strict ISO C hides (the
# compiler's default, gnu17, is what embedders get)
step "consumer built with pkg-config (shared)"
mkdir -p "$TMP/pc"
# shellcheck disable=SC2086 # pkg-config output is a list of words
if "$CC" "${SAN_FLAGS[@]}" -Wall -Wextra -Werror -o "$TMP/pc/consumer" \
     "$HERE/consumer.c" $cflags $libs; then
  check_loads_installed "pkg-config shared" "$TMP/pc/consumer"
  run_consumer "pkg-config shared" "$TMP/pc/consumer"
else
  fail "pkg-config shared: build failed"
fi

step "consumer built with pkg-config --static (libwstun.a)"
# -lwstun would pick the shared library: name the archive instead
static_link=$(printf ' %s ' "$static_libs" | sed "s| -lwstun | $LIBDIR/libwstun.a |")
# shellcheck disable=SC2086
if "$CC" "${SAN_FLAGS[@]}" -Wall -Wextra -Werror \
     -o "$TMP/pc/consumer_static" "$HERE/consumer.c" $cflags $static_link; then
  if ldd "$TMP/pc/consumer_static" | grep -q libwstun; then
    fail "pkg-config static: links libwstun.so"
  fi
  run_consumer "pkg-config static" "$TMP/pc/consumer_static"
else
  fail "pkg-config static: build failed (Libs.private incomplete?)"
fi

# --- CMake package --------------------------------------------------------------
step "consumer built with find_package(wstun CONFIG)"
unset PKG_CONFIG_PATH # the package must find libuv on its own (system .pc)
san="${SAN_FLAGS[*]}"
if cmake -S "$HERE" -B "$TMP/cmake" -DCMAKE_PREFIX_PATH="$PREFIX" \
     -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
     >"$TMP/cmake.log" 2>&1 &&
   cmake --build "$TMP/cmake" >>"$TMP/cmake.log" 2>&1; then
  grep 'found wstun' "$TMP/cmake.log" || true
  check_loads_installed "cmake wstun::wstun" "$TMP/cmake/consumer_shared"
  run_consumer "cmake wstun::wstun" "$TMP/cmake/consumer_shared"
  if ldd "$TMP/cmake/consumer_static" | grep -q libwstun; then
    fail "cmake wstun::wstun_static: links libwstun.so"
  fi
  run_consumer "cmake wstun::wstun_static" "$TMP/cmake/consumer_static"
else
  sed 's/^/  /' "$TMP/cmake.log" >&2
  fail "cmake consumer: configure or build failed"
fi

# a version the package does not satisfy is refused
mkdir -p "$TMP/cmake-version"
cat >"$TMP/cmake-version/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(wstun_version_check LANGUAGES C)
find_package(wstun $((MAJOR + 1)).0 CONFIG QUIET)
if(wstun_FOUND)
  message(FATAL_ERROR "wstun $VERSION accepted for $((MAJOR + 1)).0")
endif()
find_package(wstun $MAJOR CONFIG REQUIRED)
EOF
if cmake -S "$TMP/cmake-version" -B "$TMP/cmake-version/build" \
     -DCMAKE_PREFIX_PATH="$PREFIX" >"$TMP/cmake-version.log" 2>&1; then
  ok "find_package(wstun $MAJOR) found, $((MAJOR + 1)).0 refused"
else
  sed 's/^/  /' "$TMP/cmake-version.log" >&2
  fail "ConfigVersion check"
fi

# --- man pages and units ----------------------------------------------------------
step "man pages"
for page in wstunsrv wstuncli wstunnel; do
  f=$PREFIX/share/man/man1/$page.1
  [ -f "$f" ] || continue
  if command -v man >/dev/null; then
    warnings=$(MANWIDTH=80 man --warnings -l "$f" 2>&1 >"$TMP/$page.txt") ||
      { fail "man -l $page.1 failed: $warnings"; continue; }
    checker="man --warnings"
  elif command -v groff >/dev/null; then
    warnings=$(groff -man -ww -z "$f" 2>&1)
    groff -man -Tutf8 "$f" >"$TMP/$page.txt" 2>/dev/null
    checker="groff -ww"
  else
    echo "SKIP: neither man nor groff installed: $page.1 not rendered"
    continue
  fi
  if [ -n "$warnings" ]; then
    fail "$page.1 renders with warnings ($checker):"
    printf '%s\n' "$warnings" | sed 's/^/  /' >&2
  elif ! grep -q "${page^^}(1)" "$TMP/$page.txt"; then
    fail "$page.1 rendered without its title"
  else
    ok "$page.1 renders cleanly ($checker, $(wc -l <"$TMP/$page.txt") lines)"
  fi
done

# every flag the programs list in -h is documented: a new flag without a
# man page entry fails here
for pair in wstunsrv:wstunsrv wstuncli:wstuncli wstunsrv:wstunnel \
            wstuncli:wstunnel; do
  prog=${pair%%:*} page=${pair#*:}
  f=$PREFIX/share/man/man1/$page.1
  if [ ! -x "$PREFIX/bin/$prog" ] || [ ! -f "$f" ]; then continue; fi
  undocumented=()
  while read -r flag; do
    grep -qF -- ".BI \\-${flag//-/\\-} " "$f" ||
      grep -qF -- ".B \\-${flag//-/\\-}" "$f" || undocumented+=("-$flag")
  done < <("$PREFIX/bin/$prog" -h | sed -n 's/^  -\([a-z][a-z0-9-]*[a-z0-9]\) .*/\1/p')
  if [ ${#undocumented[@]} -gt 0 ]; then
    fail "$page.1 does not document $prog's ${undocumented[*]}"
  else
    ok "$page.1 documents every flag of $prog -h"
  fi
done

step "systemd units"
for unit in wstunsrv wstuncli; do
  f=$PREFIX/lib/systemd/system/$unit.service
  [ -f "$f" ] || continue
  if grep -q '@[A-Z_]*@' "$f"; then fail "$unit.service has an unsubstituted @VAR@"; fi
  if grep -qx "ExecStart=$PREFIX/bin/$unit \\\$${unit^^}_OPTS" "$f"
  then ok "$unit.service runs $PREFIX/bin/$unit"
  else fail "$unit.service: ExecStart does not name $PREFIX/bin/$unit"; fi
done

# the example env files list every flag of -h: a new flag without its line
# there fails here
for unit in wstunsrv wstuncli; do
  env_file=$PREFIX/share/doc/wstun/examples/$unit.env
  if [ ! -x "$PREFIX/bin/$unit" ] || [ ! -f "$env_file" ]; then continue; fi
  missing=()
  while read -r flag; do
    grep -qE -- "(^|[^a-z-])-$flag([^a-z0-9-]|\$)" "$env_file" || missing+=("-$flag")
  done < <("$PREFIX/bin/$unit" -h | sed -n 's/^  -\([a-z][a-z0-9-]*[a-z0-9]\) .*/\1/p')
  if [ ${#missing[@]} -gt 0 ]; then
    fail "$unit.env does not list $unit's ${missing[*]}"
  else
    ok "$unit.env lists every flag of $unit -h"
  fi
done

# every cred:ID the env files and man pages tell the operator to use is a
# credential the unit loads (LoadCredential=ID:...), and every credential
# the unit loads is explained in its env file
for unit in wstunsrv wstuncli; do
  f=$PREFIX/lib/systemd/system/$unit.service
  env_file=$PREFIX/share/doc/wstun/examples/$unit.env
  if [ ! -f "$f" ] || [ ! -f "$env_file" ]; then continue; fi
  loaded=$(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$f" | sort -u)
  # (the man page's \- are dashes)
  named=$(cat "$env_file" "$PREFIX/share/man/man1/$unit.1" | sed 's/\\-/-/g' |
          grep -o 'cred:[a-z][a-z0-9.-]*' | sed 's/^cred://' | sort -u)
  unloaded=$(comm -13 <(printf '%s\n' "$loaded") <(printf '%s\n' "$named"))
  if [ -z "$loaded" ]; then
    fail "$unit.service loads no credentials (LoadCredential=)"
  elif [ -n "$unloaded" ]; then
    fail "$unit: named but not loaded by $unit.service: $(printf '%s' "$unloaded" | tr '\n' ' ')"
  else
    ok "$unit.service loads every credential its docs name: $(printf '%s' "$loaded" | tr '\n' ' ')"
  fi
  for id in $loaded; do
    grep -q "cred:$id" "$env_file" || fail "$unit.env does not explain credential $id"
  done
done

if command -v systemd-analyze >/dev/null; then
  # MANPATH: Documentation=man:... must resolve to the installed pages
  if out=$(cd "$PREFIX/lib/systemd/system" &&
           MANPATH=$PREFIX/share/man systemd-analyze verify \
             ./wstunsrv.service ./wstuncli.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify: no complaints"
  else
    fail "systemd-analyze verify:"
    printf '%s\n' "$out" | sed 's/^/  /' >&2
  fi
  # and it would complain: a misspelt key and a bad credential line
  mkdir -p "$TMP/units-broken"
  cp "$PREFIX/lib/systemd/system/wstunsrv.service" "$TMP/units-broken/"
  printf '[Service]\nLoadCredentialx=a:b\nLoadCredential=/x\n' \
    >>"$TMP/units-broken/wstunsrv.service"
  out=$(cd "$TMP/units-broken" && MANPATH=$PREFIX/share/man \
        systemd-analyze verify ./wstunsrv.service 2>&1) || true
  case "$out" in
  *LoadCredentialx*'"/x"'*) ok "systemd-analyze verify catches a broken unit" ;;
  *) fail "systemd-analyze verify let a broken unit pass: $out" ;;
  esac
else
  echo "SKIP: systemd-analyze not installed (apt-get install systemd): units not verified"
fi

step "summary"
if [ "$FAILED" -ne 0 ]; then
  echo "$FAILED check(s) failed" >&2
  exit 1
fi
echo "install test passed"
