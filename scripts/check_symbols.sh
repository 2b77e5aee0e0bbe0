#!/usr/bin/env bash
# Link check for code the CPU build only compiles (the LibTorch-facing CUDA sources and the GPU
# tests): every streamrecon:: symbol that one of the build's object files uses must be defined by
# another. Usage: scripts/check_symbols.sh [build_dir]
set -euo pipefail
BUILD=${1:-build}
mapfile -t objects < <(find "$BUILD" -name "*.o" -path "*CMakeFiles*" ! -path "*cmake_pch*")
defined=$(nm -C --defined-only "${objects[@]}" 2>/dev/null | grep -E " [TtWVuBDR] streamrecon::" | sed -E 's/^[0-9a-f]* [A-Za-z] //' | sort -u)
used=$(nm -C --undefined-only "${objects[@]}" 2>/dev/null | grep -E " U streamrecon::" | sed -E 's/^ *U //' | sort -u)
missing=$(comm -23 <(echo "$used") <(echo "$defined"))
if [ -n "$missing" ]; then
  echo "undefined streamrecon symbols:"; echo "$missing"; exit 1
fi
echo "symbols: every streamrecon:: symbol used by the ${#objects[@]} object files is defined"
