#!/usr/bin/env bash
# Installs what building and testing wstun needs on a fresh Debian 12.
# Idempotent: when every package is already installed, apt is not touched.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev libwslay-dev libmbedtls-dev libjansson-dev node-llhttp
  libinih-dev
  curl python3 ca-certificates procps
)
# `--tests`: what only the test suite uses: promtool (prometheus) checks
# the /metrics exposition, man-db renders the man pages, clang and its
# runtime (libFuzzer, sanitizers) run the fuzz targets, openssl (the CLI)
# makes the TLS tests' certificates and tinyproxy is their CONNECT proxy;
# valgrind runs a subset of the end-to-end tests (tests/valgrind.sh);
# systemd brings systemd-analyze, which verifies the units (install test);
# haproxy is the balancer of the cluster test (tests/e2e/test_cluster.py);
# python3-websockets is the WebSocket backend and client of the
# passthrough test (tests/e2e/test_passthrough.py).
if [ "${1:-}" = "--tests" ]; then
  PACKAGES+=(prometheus man-db clang libclang-rt-14-dev openssl tinyproxy
             valgrind systemd haproxy python3-websockets)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [ "$status" != "installed" ]; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or install sudo) to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
