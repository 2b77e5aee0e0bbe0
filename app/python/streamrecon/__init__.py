"""StreamRecon: streaming 3D reconstruction from video, with a KV cache kept inside a fixed memory budget.

The engine of the `streamrecon` command line, in Python. Push frames one at a time and get, for each,
its depth map, point map, confidences and camera, as NumPy arrays or torch tensors:

    import streamrecon
    with streamrecon.Reconstructor(policy="xstream", kv_budget="512MiB") as rec:
        for frame in streamrecon.open_frames("my_video.mp4"):
            r = rec.push(frame)
            print(r.index, r.depth.shape, r.extrinsic)

Without `weights`, the shipped default model (recon-small, trained on the project's synthetic
scenes) runs; pass the released StreamVGGT checkpoint (`weights="checkpoints.pth"`) for real video.

Main pieces:
  Reconstructor     the engine: push(frame) -> Result, reset(), cache_stats(), evaluate(...)
  Result            depth, depth_conf, world_points, world_points_conf, extrinsic, intrinsic, pose_enc,
                    image, index, name, timestamp, model_ms, step_ms, cache_bytes
  open_frames       frames of an image folder, glob, video file or camera ("camera:0")
  SyntheticScene    rendered rooms and outdoor squares with exact depth, poses and intrinsics
  Cloud             the accumulated point cloud, as `streamrecon run` builds it
  write_ply, write_tum, write_cameras_json, write_colmap, write_transforms_json   the exporters
  evaluate          `streamrecon eval` as a function: metrics against ground truth, as a dict
  load_safetensors  a .safetensors file (weights, `run --raw-outputs` frames) as NumPy arrays

Errors are raised as streamrecon.Error and its kinds (OptionError is also a ValueError, FileError
an OSError), with the CLI's messages. The engine logs warnings only; set_log_level("info") shows
more. The GIL is released while frames are decoded, pushed and evaluated.
"""

from ._build_info import TORCH_CUDA as _TORCH_CUDA

if _TORCH_CUDA:
    # With the CUDA build of LibTorch, torch's Python package must be loaded first: on the H200
    # (Python 3.12, docs/perf.md call 50) importing torch after the module aborted in torch's import.
    try:
        import torch  # noqa: F401
    except Exception:  # not installed, or its CUDA libraries do not load: NumPy results still work
        pass

from ._core import (  # noqa: F401  (the public API)
    BudgetError,
    Cloud,
    Error,
    FileError,
    Frame,
    FrameSource,
    OptionError,
    Reconstructor,
    Result,
    SyntheticFrame,
    SyntheticScene,
    WeightsError,
    __version__,
    can_read_images,
    can_track,
    can_write_images,
    can_write_ply,
    cuda_available,
    default_weights,
    load_safetensors,
    open_frames,
    set_log_level,
    write_cameras_json,
    write_colmap,
    write_ply,
    write_transforms_json,
    write_tum,
)

__all__ = [
    "BudgetError", "Cloud", "Error", "FileError", "Frame", "FrameSource", "OptionError", "Reconstructor", "Result",
    "SyntheticFrame", "SyntheticScene", "WeightsError", "__version__", "can_read_images",
    "can_track", "can_write_images", "can_write_ply", "cuda_available", "default_weights", "evaluate",
    "load_safetensors", "open_frames", "set_log_level", "write_cameras_json", "write_colmap", "write_ply",
    "write_transforms_json", "write_tum",
]


def evaluate(dataset="synthetic", *, frames=None, scene_seed=0, size=None, every=1, out=None, min_depth=1e-3,
             max_depth=0.0, cloud_align="umeyama", icp=False, icp_threshold=0.1, max_points=200000, cloud_stride=1,
             poses="auto", **options):
    """`streamrecon eval` as a function: opens a Reconstructor with `options` (weights, policy,
    format, kv_budget, device, ...; without weights the shipped default model) and returns
    Reconstructor.evaluate(dataset, ...), the metrics as a dict (metrics.json's content). poses is
    `eval --poses`: "auto" (tracked where this build can), "tracked" or "head".

    >>> m = streamrecon.evaluate("synthetic:orbit", frames=24, scene_seed=7)
    >>> m["sequences"][0]["depth_l1"]["abs_rel"], m["sequences"][0]["pose"]["ate_percent_of_path"]
    """
    with Reconstructor(**options) as rec:
        return rec.evaluate(dataset, frames=frames, scene_seed=scene_seed, size=size, every=every, out=out,
                            min_depth=min_depth, max_depth=max_depth, cloud_align=cloud_align, icp=icp,
                            icp_threshold=icp_threshold, max_points=max_points, cloud_stride=cloud_stride, poses=poses)
