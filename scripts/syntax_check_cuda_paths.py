#!/usr/bin/env python3
"""Syntax-checks sources whose CUDA-build code paths (STREAMRECON_HAVE_CUDA_KV) the CPU build skips.

Uses build/compile_commands.json of a CPU build (the wheel's headers include ATen/cuda) and the CUDA
toolkit's headers. Usage: scripts/syntax_check_cuda_paths.py [build_dir] [files...]
"""
import json
import shlex
import subprocess
import sys

build = sys.argv[1] if len(sys.argv) > 1 else "build"
files = sys.argv[2:] or ["models/streaming_model.cc", "app/cmd_bench.cc", "kernels/bench_kv_kernels.cc"]
commands = json.load(open(f"{build}/compile_commands.json"))
base = next(c for c in commands if c["file"].endswith("kernels/kv_ops.cc"))
args, skip = [], False
for a in shlex.split(base["command"]):
    if skip:
        skip = False
        continue
    if a in ("-o", "-include", "-Xclang"):
        skip = True
        continue
    if a == "-c" or a.endswith("kv_ops.cc") or "cmake_pch" in a:
        continue
    args.append(a)
status = 0
for f in files:
    r = subprocess.run(args + ["-fsyntax-only", "-DSTREAMRECON_HAVE_CUDA_KV=1", "-I/usr/local/cuda/include", f],
                       capture_output=True, text=True)
    print(f"{f}: {'ok' if r.returncode == 0 else 'FAILED'}")
    if r.returncode:
        print(r.stderr[-4000:])
        status = 1
sys.exit(status)
