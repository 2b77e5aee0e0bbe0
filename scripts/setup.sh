#!/usr/bin/env bash
# Installs what StreamRecon needs on a Debian 12 machine: Debian packages and LibTorch
# (from PyPI's torch wheel). Installs only what is missing, so it is cheap to re-run.
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
PYTHON="${PYTHON:-python3}"

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libopencv-dev libopen3d-dev libimgui-dev libstb-dev libglfw3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev nlohmann-json3-dev libeigen3-dev
  xvfb xauth libgl1-mesa-dri libglx-mesa0 gnuplot-nox
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "[setup] error: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# LibTorch: skipped when the user points CMake at their own (STREAMRECON_TORCH_DIR or Torch_DIR).
if [ -n "${STREAMRECON_TORCH_DIR:-}" ] || [ -n "${Torch_DIR:-}" ]; then
  exit 0
fi
have=$("$PYTHON" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    print(m.version("torch"))
except m.PackageNotFoundError:
    pass
PY
)
if [ "${have%%+*}" != "$TORCH_VERSION" ]; then
  echo "[setup] installing LibTorch from PyPI: torch==$TORCH_VERSION (found: ${have:-none})"
  # --no-deps: we link libtorch_cpu only on CPU machines; the CUDA toolkit provides libcudart/libcupti.
  "$PYTHON" -m pip install -q --no-deps --disable-pip-version-check "torch==$TORCH_VERSION"
fi
