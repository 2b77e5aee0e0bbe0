#!/usr/bin/env bash
# Run on a CPU machine before a device call: fills the two git-ignored folders that the GPU scripts
# read (the device machine has CUDA, LibTorch, cmake and ninja, but not these):
#   .deps/          Debian's header-only/-dev packages (nlohmann-json, CLI11, spdlog, fmt, Eigen,
#                   GoogleTest, OpenSSL, pybind11), unpacked (not installed) with dpkg -x, and
#                   .deps/python/: pytest and its pure-Python dependencies (PyPI wheels, unpacked)
#                   for the Python module's tests
#   .gpu_fixtures/  a copy of ../shared/fixtures (the parity fixtures) when present
# Idempotent; a second run only re-copies the fixtures.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PKGS=(nlohmann-json3-dev libcli11-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libeigen3-dev libgtest-dev libgmock-dev libssl-dev libssl3
      pybind11-dev)
if [ ! -f .deps/.complete ] || [ ! -f .deps/usr/include/openssl/evp.h ] || [ ! -f .deps/usr/include/pybind11/pybind11.h ]; then
  rm -rf .deps && mkdir -p .deps/debs
  (cd .deps/debs && apt-get download "${PKGS[@]}" >/dev/null)
  for f in .deps/debs/*.deb; do dpkg -x "$f" .deps; done
  rm -rf .deps/debs .deps/usr/share/doc .deps/usr/share/man .deps/usr/lib/x86_64-linux-gnu/libcrypto.a .deps/usr/lib/x86_64-linux-gnu/libssl.a
  touch .deps/.complete
fi
if [ ! -f .deps/python/pytest/__init__.py ]; then
  rm -rf .deps/python .deps/wheels && mkdir -p .deps/python .deps/wheels
  python3 -m pip download -q --no-deps --only-binary=:all: -d .deps/wheels pytest pluggy iniconfig packaging exceptiongroup tomli
  for w in .deps/wheels/*.whl; do python3 -m zipfile -e "$w" .deps/python; done
  rm -rf .deps/wheels
fi
# PyPI's pybind11 (headers and CMake files): the device's Python is 3.12, which Debian 12's
# pybind11 2.10 predates (scripts/gpu_build.sh uses it there only).
if [ ! -f .deps/pybind11-pypi/pybind11/share/cmake/pybind11/pybind11Config.cmake ]; then
  rm -rf .deps/pybind11-pypi .deps/wheels && mkdir -p .deps/wheels
  python3 -m pip download -q --no-deps --only-binary=:all: -d .deps/wheels pybind11
  python3 -m zipfile -e .deps/wheels/pybind11-*.whl .deps/pybind11-pypi
  rm -rf .deps/wheels
fi
if [ -d ../shared/fixtures/parity ]; then
  rm -rf .gpu_fixtures && mkdir -p .gpu_fixtures/fixtures
  cp -r ../shared/fixtures/parity .gpu_fixtures/fixtures/
  cp -r ../shared/samples .gpu_fixtures/ 2>/dev/null || true
fi
du -sh .deps .gpu_fixtures 2>/dev/null || true
