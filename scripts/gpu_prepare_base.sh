#!/usr/bin/env bash
# Extracts commit REV's source (without docs and the shipped weights) into .gpu_base/ (git-ignored),
# for scripts/gpu_compare.sh to build on the device next to the working tree.
set -euo pipefail
REV=${1:?usage: gpu_prepare_base.sh REV}
rm -rf .gpu_base && mkdir -p .gpu_base
git archive "$REV" -- . ':!models/recon_small.safetensors' ':!docs' | tar -x -C .gpu_base
echo "$REV" > .gpu_base/REV
du -sh .gpu_base
