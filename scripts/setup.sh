#!/usr/bin/env bash
# Installs what StreamRecon needs on a Debian 12 machine: Debian packages and LibTorch (PyPI's
# torch wheel, unpacked into a project-local virtual environment, .venv/, never into the system
# Python, which Debian marks as externally managed). Installs only what is missing, so a second
# run takes a second or two.
#
# First run on a brand-new Debian 12 (measured by scripts/fresh_debian_test.sh): about 400 MB of
# Debian packages (1.5 GB installed), then the torch wheel with its dependencies (4.6 GB in .venv/,
# most of it NVIDIA's CUDA libraries, which `import torch` needs even without a GPU).
#
# Knobs: TORCH_VERSION (default 2.11.0), STREAMRECON_VENV (default <repo>/.venv),
#        STREAMRECON_TORCH_DIR or Torch_DIR (use your own LibTorch; no wheel is installed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
VENV="${STREAMRECON_VENV:-$ROOT/.venv}"

# A fresh clone's `make test` fills about 8 GB beside it (.venv 4.6, build/ 1.4, the sanitizer and
# fuzz builds 1.6; a clean clone, session 16), ccache's cache up to 5 GB more, and a new machine's
# Debian packages 2 GB. A disk that runs out shows up later as a failed link, so say it here, where
# the cause is plain.
free_gb=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "${free_gb:-0}" -lt 4 ]; then
  echo "[setup] warning: only ${free_gb} GB free on $(df -P "$ROOT" | awk 'NR==2 {print $6}');" \
       "a fresh clone's build and tests need about 8 GB, and ccache up to 5 GB more" >&2
fi

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  python3 python3-venv python3-dev pybind11-dev python3-numpy python3-pytest python3-matplotlib
  libopencv-dev libopen3d-dev libimgui-dev libstb-dev libglfw3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev nlohmann-json3-dev libeigen3-dev
  libssl-dev clang libclang-rt-14-dev
  slurm-wlm munge
  xvfb xauth libgl1-mesa-dri libglx-mesa0 gnuplot-nox
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  # dpkg -s also answers for removed packages whose configuration stayed: ask for "installed".
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = "installed" ] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "[setup] error: need root or sudo to install: ${missing[*]}" >&2; exit 2; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# LibTorch: skipped when the user points CMake at their own (STREAMRECON_TORCH_DIR or Torch_DIR).
if [ -n "${STREAMRECON_TORCH_DIR:-}" ] || [ -n "${Torch_DIR:-}" ]; then
  exit 0
fi

# Debian's interpreter, whatever else is on PATH (pyenv, conda): the venv must not depend on a
# Python that a fresh machine lacks.
SYS_PYTHON=/usr/bin/python3
[ -x "$SYS_PYTHON" ] || SYS_PYTHON="$(command -v python3)"
if [ ! -x "$VENV/bin/python3" ] || ! "$VENV/bin/python3" -c 'import sys' 2>/dev/null; then
  echo "[setup] creating the project's Python environment in $VENV"
  rm -rf "$VENV"
  # --system-site-packages: Debian's numpy, pytest and matplotlib are visible inside it (the Python
  # module's tests and examples use them); what pip installs here takes precedence.
  "$SYS_PYTHON" -m venv --system-site-packages "$VENV"
fi
# An environment made by an older setup.sh: let it see Debian's packages too.
if grep -q '^include-system-site-packages = false' "$VENV/pyvenv.cfg" 2>/dev/null; then
  sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' "$VENV/pyvenv.cfg"
fi

have=$("$VENV/bin/python3" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    print(m.version("torch"))
except m.PackageNotFoundError:
    pass
PY
)
if [ "${have%%+*}" != "$TORCH_VERSION" ]; then
  echo "[setup] installing LibTorch from PyPI into $VENV: torch==$TORCH_VERSION (found: ${have:-none}; ~900 MB download)"
  # --no-deps: on CPU machines we link libtorch_cpu only, not torch's CUDA libraries.
  # (pip keeps the wheel in its user cache, so another clone on this machine installs it offline)
  "$VENV/bin/python3" -m pip install -q --no-deps --disable-pip-version-check \
    "torch==$TORCH_VERSION"
fi
# `import torch` (the Python module's tests hand tensors to torch) needs all of torch's
# dependencies, its CUDA libraries included (NVIDIA's wheels: cuDNN, cuBLAS, NCCL, ..., about
# 3 GB), even on machines without a GPU: torch's Python extension links libtorch_cuda. The C++
# build links libtorch_cpu only on CPU machines; on GPU machines (nvidia-smi answers and nvcc is
# there) CMake links the CUDA build of LibTorch (STREAMRECON_TORCH_CUDA=AUTO).
# STREAMRECON_NO_TORCH_PYTHON=1 skips them (the Python module's tests then skip, saying why).
# (pip check exits non-zero when something is missing: its output is read, not its status.)
unmet=$("$VENV/bin/python3" -m pip check 2>/dev/null || true)
if [ -z "${STREAMRECON_NO_TORCH_PYTHON:-}" ] && grep -q "^torch " <<< "$unmet"; then
  echo "[setup] installing torch==$TORCH_VERSION's dependencies into $VENV (CUDA libraries included, about 3 GB)"
  "$VENV/bin/python3" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
fi
# libtorch_cpu of PyPI's (CUDA) wheel still needs libcudart.so.13 and libcupti.so.13 at link and
# load time. A machine without the CUDA toolkit gets them from the two NVIDIA wheels that torch
# 2.11.0 pins (through cuda-toolkit==13.0.2), about 13 MB; CMake puts their folder on the rpath.
CUDA_RUNTIME_WHEELS=("nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*")
site=$("$VENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -f "$site/nvidia/cu13/lib/libcudart.so.13" ] || [ ! -f "$site/nvidia/cu13/lib/libcupti.so.13" ]; then
  echo "[setup] installing the CUDA runtime libraries LibTorch links against: ${CUDA_RUNTIME_WHEELS[*]}"
  "$VENV/bin/python3" -m pip install -q --no-deps --disable-pip-version-check "${CUDA_RUNTIME_WHEELS[@]}"
fi
