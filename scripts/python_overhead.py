#!/usr/bin/env python3
"""Per-frame overhead of the Python module's push() against the C++ step it wraps.

For each output mode, pushes the same pre-rendered synthetic frames (HxWx3 uint8 at the model's
input size) and reports per frame, after a warm-up:
  step (C++)   StreamingModel::Step alone, on a GPU until its work is done (Result.model_ms);
  push (C++)   the whole bound call (Result.step_ms): input conversion, resize, step, results;
  push (Python) the wall time of rec.push(frame) seen from Python;
  overhead     push (Python) - step (C++), absolute and as a share of the step.

    .venv/bin/python3 scripts/python_overhead.py [--device cpu|cuda] [--frames 40] [--size 224]
"""
import argparse
import statistics
import time

import numpy as np
import streamrecon

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--weights", help="weights file (default: the shipped model)")
parser.add_argument("--random-seed", type=int, help="random weights of --config instead")
parser.add_argument("--config", help="model config (with --random-seed)")
parser.add_argument("--device", default="auto")
parser.add_argument("--size", default="224", help="model input width or WxH")
parser.add_argument("--frames", type=int, default=40)
parser.add_argument("--warmup", type=int, default=5)
parser.add_argument("--policy", default="xstream")
parser.add_argument("--kv-budget", default="256MiB")
parser.add_argument("--cuda-graphs", action="store_true")
parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
args = parser.parse_args()

modes = ["numpy"]
try:
    import torch  # noqa: F401
    modes.append("torch")
except ImportError:
    pass

options = dict(device=args.device, dtype=args.dtype, policy=args.policy, kv_budget=args.kv_budget, size=args.size,
               cuda_graphs=args.cuda_graphs, random_seed=args.random_seed, config=args.config)
with streamrecon.Reconstructor(args.weights, **options) as rec:
    scene = streamrecon.SyntheticScene("walk", frames=args.frames + args.warmup, seed=1, size=args.size)
    frames = [np.array(f.image) for f in scene]
    print(f"model {args.weights or args.config or rec.weights_path} on {rec.device}, {frames[0].shape[1]}x{frames[0].shape[0]}, "
          f"{args.frames} frames after {args.warmup} warm-up, {args.dtype}, policy {args.policy}, budget {args.kv_budget}")
    print("| output | step (C++) ms | push (C++) ms | push (Python) ms | overhead ms | overhead / step |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in modes:
        rec.reset()
        step, bound, wall = [], [], []
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            r = rec.push(frame, output=mode)
            t1 = time.perf_counter()
            if mode == "torch" and hasattr(r.depth, "device") and r.depth.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                step.append(r.model_ms)
                bound.append(r.step_ms)
                wall.append(1000 * (t1 - t0))
        s, b, w = (statistics.mean(x) for x in (step, bound, wall))
        print(f"| {mode} | {s:.2f} | {b:.2f} | {w:.2f} | {w - s:.2f} | {100 * (w - s) / s:.1f}% |")
