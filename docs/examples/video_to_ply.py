"""Streams a video (or an image folder, or camera:0) through the engine and writes a coloured
point cloud, keeping the KV cache inside a fixed budget however long the video is.

    .venv/bin/python3 docs/examples/video_to_ply.py VIDEO cloud.ply [--weights checkpoints.pth]
"""
import argparse

import streamrecon

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("input", help="video file, image folder or camera:N")
parser.add_argument("ply", help="the point cloud to write")
parser.add_argument("--weights", help="a StreamVGGT checkpoint (default: the shipped model)")
parser.add_argument("--budget", default="512MiB", help="KV-cache byte budget")
parser.add_argument("--every", type=int, default=1, help="take every N-th frame")
args = parser.parse_args()

cloud = streamrecon.Cloud(conf_threshold=1.5, voxel_size=0.01, max_points=2_000_000)
with streamrecon.Reconstructor(args.weights, policy="xstream", format="oscar4", kv_budget=args.budget) as rec:
    frames = streamrecon.open_frames(args.input, every=args.every)
    for frame in frames:
        r = rec.push(frame)
        cloud.add(r)
        if r.index % 10 == 0:
            print(f"frame {r.index} ({frames.size_hint} expected): {r.model_ms:.0f} ms, "
                  f"cache {r.cache_bytes / 2**20:.1f} MiB, {len(cloud)} points", flush=True)
cloud.write_ply(args.ply)
print(f"wrote {len(cloud)} points to {args.ply}")
