# Type stubs for the streamrecon package (the compiled streamrecon._core and its wrappers), so that
# editors complete the API. Arrays are NumPy arrays, or torch tensors with output="torch".
from __future__ import annotations

from os import PathLike
from typing import Any, Iterator, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, "PathLike[str]"]
_Size = Union[int, str, Tuple[int, int], None]
_Array = Any  # numpy.ndarray, or torch.Tensor with output="torch"

class Error(RuntimeError):
    """Base of StreamRecon's errors; the message says what was expected and what was found."""

class OptionError(Error, ValueError):
    """A bad option or argument (named as the CLI spells it: --cache-tokens is cache_tokens)."""

class FileError(Error, OSError):
    """A file that cannot be read or written, or is malformed; the message names it."""

class WeightsError(Error):
    """Weights that do not match the model config (every bad key is listed)."""

class BudgetError(Error, ValueError):
    """A KV-cache budget that cannot hold what the cache must keep."""

class Frame:
    """One frame of a source: its RGB image and where it came from."""
    @property
    def index(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def name(self) -> str: ...
    @property
    def image(self) -> npt.NDArray[np.uint8]: """HxWx3 RGB (read-only view)."""
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...

class FrameSource(Iterator[Frame]):
    """Frames of a folder, glob, video or camera (open_frames)."""
    def __iter__(self) -> FrameSource: ...
    def __next__(self) -> Frame: ...
    @property
    def size_hint(self) -> int: """Frames it expects to deliver; -1 when unknown (cameras)."""
    @property
    def skipped(self) -> int: """Damaged frames skipped so far (strict=False)."""

def open_frames(path: _Path, *, every: int = 1, max_frames: Optional[int] = None, strict: bool = False) -> FrameSource:
    """Frames of an image folder, a glob, one image, a video file or 'camera:N', as `--input` reads them."""

class SyntheticFrame:
    """A rendered frame with its exact ground truth."""
    @property
    def frame(self) -> Frame: ...
    @property
    def index(self) -> int: ...
    @property
    def image(self) -> npt.NDArray[np.uint8]: """HxWx3 RGB."""
    @property
    def depth(self) -> npt.NDArray[np.float32]: """HxW metres along the optical axis."""
    @property
    def world_from_cam(self) -> npt.NDArray[np.float64]: """4x4 camera-to-world, OpenCV camera axes, world z up."""
    @property
    def cam_from_world(self) -> npt.NDArray[np.float64]: ...
    @property
    def intrinsic(self) -> npt.NDArray[np.float64]: """3x3 K in pixels."""

class SyntheticScene:
    """A textured room or outdoor square along a walk, orbit or pan, with exact ground truth.

    scene: "walk", "orbit" or "pan", optionally ":outdoor". Seeds below 100000 were never used in training.
    """
    def __init__(self, scene: str = "walk", *, frames: int = 24, seed: int = 0, size: _Size = None,
                 fov_x_deg: Optional[float] = None) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> SyntheticFrame: ...
    def __iter__(self) -> Iterator[SyntheticFrame]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def name(self) -> str: ...

class Result:
    """What Reconstructor.push returns for one frame (arrays at the model's input size; read-only)."""
    @property
    def depth(self) -> _Array: """HxW depth."""
    @property
    def depth_conf(self) -> _Array: """HxW depth confidence (1 + exp(c), always > 1)."""
    @property
    def world_points(self) -> _Array: """HxWx3 points in the first camera's frame."""
    @property
    def world_points_conf(self) -> _Array: """HxW point confidence."""
    @property
    def extrinsic(self) -> _Array: """3x4 cam_from_world [R | t], OpenCV axes."""
    @property
    def intrinsic(self) -> _Array: """3x3 K in pixels (the known camera when one was given)."""
    @property
    def pose_enc(self) -> _Array: """t (3), quaternion xyzw (4), fov_h, fov_w."""
    @property
    def step_ms(self) -> float: """The whole push: input conversion, resize, step, outputs."""
    @property
    def cache_bytes(self) -> int: """Bytes held by the KV caches after this frame."""
    @property
    def image(self) -> npt.NDArray[np.uint8]: """The frame as the model saw it (HxWx3)."""
    @property
    def index(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def name(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def model_ms(self) -> float: """The C++ step alone (on a GPU, until its work is done), milliseconds."""

_Input = Union[Frame, SyntheticFrame, npt.NDArray[Any], Any]

class Reconstructor:
    """The streaming engine: push frames, get depth, points and cameras (options as the CLI's)."""
    def __init__(self, weights: Optional[_Path] = None, config: Optional[_Path] = None, *,
                 device: str = "auto", dtype: Literal["float32", "float64", "bfloat16"] = "float32",
                 policy: Literal["none", "xstream", "xstream-page", "window", "random"] = "none",
                 format: Literal["fp32", "bf16", "kivi4", "kivi2", "oscar4", "oscar2"] = "fp32",
                 kv_budget: Union[int, str, None] = None, cache_tokens: Optional[int] = None, pool: int = 16,
                 k_group: int = 32, v_group: int = 64, first_frame_bf16: bool = False, v_hadamard: bool = False,
                 prune_seed: int = 0, size: _Size = None, intrinsics: Optional[_Path] = None,
                 random_seed: Optional[int] = None, cuda_graphs: bool = False, bf16_heads: bool = False,
                 output: Literal["numpy", "torch"] = "numpy",
                 poses: Literal["head", "tracked", "auto"] = "head") -> None: ...
    def push(self, frame: _Input, *, output: Optional[Literal["numpy", "torch"]] = None) -> Result:
        """Runs one frame through the model (the GIL released) and returns its Result."""
    def reset(self) -> None:
        """Forgets the stream: the next frame is a first frame."""
    def close(self) -> None:
        """Releases the model."""
    def __enter__(self) -> Reconstructor: ...
    def __exit__(self, *args: Any) -> None: ...
    def cache_stats(self) -> dict[str, Any]:
        """bytes, max_bytes, budget_bytes, global_bytes, tokens_per_layer, trunk_tokens, format, policy, effective_bits, frames_seen."""
    def evaluate(self, dataset: str = "synthetic", *, frames: Optional[int] = None, scene_seed: int = 0,
                 size: _Size = None, every: int = 1, out: Optional[_Path] = None, min_depth: float = 1e-3,
                 max_depth: float = 0.0, cloud_align: Literal["none", "median", "umeyama"] = "umeyama",
                 icp: bool = False, icp_threshold: float = 0.1, max_points: int = 200000,
                 cloud_stride: int = 1, poses: Literal["auto", "tracked", "head"] = "auto") -> dict[str, Any]:
        """`streamrecon eval` with this model: the metrics as a dict (metrics.json's content)."""
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def weights_path(self) -> str: ...
    @property
    def output(self) -> str: ...
    @property
    def frames_seen(self) -> int: ...
    @property
    def input_size(self) -> Optional[Tuple[int, int]]: """(W, H) fixed by the stream's first frame."""
    @property
    def closed(self) -> bool: ...

class Cloud:
    """The accumulated point cloud, built as `streamrecon run` builds points.ply."""
    def __init__(self, *, conf_threshold: float = 1.5, stride: int = 1, voxel_size: float = 0.0,
                 max_points: int = 2000000, points_from_depth: bool = False) -> None: ...
    def add(self, result: Result) -> None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    @property
    def voxel_size(self) -> float: ...
    def arrays(self) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]: """(points (N, 3), colors (N, 3))."""
    def write_ply(self, path: _Path) -> None: ...
    def write_preview(self, path: _Path, *, width: int = 960, height: int = 720) -> None: ...

def write_ply(path: _Path, points: Any, colors: Any = None) -> None: ...
def write_tum(path: _Path, results: Sequence[Result]) -> None: ...
def write_cameras_json(path: _Path, results: Sequence[Result]) -> None: ...
def write_colmap(folder: _Path, results: Sequence[Result], cloud: Union[Cloud, Tuple[Any, Any], None] = None, *,
                 images: bool = True) -> list[int]: ...
def write_transforms_json(path: _Path, results: Sequence[Result], *, image_dir: str = "images") -> list[int]: ...
@overload
def load_safetensors(path: _Path) -> dict[str, npt.NDArray[Any]]: ...
@overload
def load_safetensors(path: _Path, *, with_metadata: Literal[True]) -> Tuple[dict[str, npt.NDArray[Any]], dict[str, str]]: ...
@overload
def load_safetensors(path: _Path, *, with_metadata: bool) -> Any: ...
def evaluate(dataset: str = "synthetic", *, frames: Optional[int] = None, scene_seed: int = 0, size: _Size = None,
             every: int = 1, out: Optional[_Path] = None, min_depth: float = 1e-3, max_depth: float = 0.0,
             cloud_align: str = "umeyama", icp: bool = False, icp_threshold: float = 0.1, max_points: int = 200000,
             cloud_stride: int = 1, poses: Literal["auto", "tracked", "head"] = "auto", **options: Any) -> dict[str, Any]:
    """`streamrecon eval` as a function; options open the Reconstructor (weights, policy, ...)."""
def default_weights() -> str: ...
def can_read_images() -> bool: """This build decodes images and videos (OpenCV)."""
def can_track() -> bool: """This build tracks cameras on the depth (poses="tracked"; OpenCV 4.4+)."""
def can_write_ply() -> bool: """This build writes PLY files (Open3D)."""
def can_write_images() -> bool: """This build writes PNG images (OpenCV)."""
def cuda_available() -> bool: ...
def set_log_level(level: str) -> None: ...
