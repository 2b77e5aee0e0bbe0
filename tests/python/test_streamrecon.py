"""Tests of the Python module `streamrecon` (app/python), run by `make test` through ctest.

They check that the module is the engine and not a copy of it: push() gives the CLI's outputs for
the same frames (float64, 1e-9) and the reference's on the parity fixture; torch tensors go in and
come out (on the CPU here, on CUDA in the GPU run); bad input raises the documented exceptions;
memory stays flat over 1000 pushes; and the GIL is released during a step.

Environment (set by tests/CMakeLists.txt): STREAMRECON_SHARED_DIR (the fixtures; tests that need
them skip with a reason without them), STREAMRECON_EXE (the CLI of the same build).
"""
import os
import pathlib
import subprocess
import threading
import time

import numpy as np
import pytest

import streamrecon

try:
    import torch
except ImportError:  # scripts/setup.sh installs it; STREAMRECON_NO_TORCH_PYTHON=1 leaves it out
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not importable in this Python (scripts/setup.sh installs it)")

SHARED = pathlib.Path(os.environ.get("STREAMRECON_SHARED_DIR", pathlib.Path(__file__).resolve().parents[3] / "shared"))
PARITY = SHARED / "fixtures" / "parity"
SAMPLES = SHARED / "samples" / "building"
EXE = os.environ.get("STREAMRECON_EXE", "")
OUTPUTS = ["depth", "depth_conf", "world_points", "world_points_conf", "pose_enc"]


def need(path):
    if not path.exists():
        pytest.skip(f"shared fixture not found: {path}")
    return path


def need_images():
    if not streamrecon.can_read_images():
        pytest.skip("this build cannot read images (built without OpenCV)")
    return need(SAMPLES)


def need_ply():
    if not streamrecon.can_write_ply() or not streamrecon.can_write_images():
        pytest.skip("this build cannot write PLY files or images (built without Open3D or OpenCV)")


def fixture_weights():
    return str(need(PARITY / "weights.safetensors"))


def tiny_model():
    """The parity fixture's weights when ../shared is there, else seeded random weights of the same
    small config: (keywords for Reconstructor, the same model as CLI options)."""
    if (PARITY / "weights.safetensors").exists():
        return {"weights": str(PARITY / "weights.safetensors")}, ["--weights", str(PARITY / "weights.safetensors")]
    return {"random_seed": 0, "config": "parity-tiny"}, ["--random-weights", "--seed", "0", "--config", "parity-tiny"]


def relative_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_torch_is_importable():
    """scripts/setup.sh installs torch with its dependencies: without them the torch tests below would
    only skip, so a broken set-up fails here (STREAMRECON_NO_TORCH_PYTHON=1 opts out)."""
    if os.environ.get("STREAMRECON_NO_TORCH_PYTHON"):
        pytest.skip("STREAMRECON_NO_TORCH_PYTHON is set: torch's Python package was left out")
    assert torch is not None, "torch is not importable in this Python: run scripts/setup.sh (it installs torch's dependencies)"


# ---- the same outputs as the CLI and the reference ----------------------------------------------

def test_push_equals_the_cli_run_in_float64(tmp_path):
    """`streamrecon run --raw-outputs` and push() over the same frames give the same numbers (float64,
    1e-9): six rendered frames always, and the fixture's six photos when ../shared is there."""
    if not EXE or not os.path.exists(EXE):
        pytest.skip("STREAMRECON_EXE (the CLI of this build) is not set")
    model, cli_model = tiny_model()
    inputs = [("synthetic", ["--synthetic", "6"], lambda: streamrecon.SyntheticScene("walk", frames=6, size=(70, 56)))]
    if SAMPLES.exists() and streamrecon.can_read_images():
        inputs.append(("photos", ["--input", str(SAMPLES)], lambda: streamrecon.open_frames(SAMPLES)))
    for label, cli_input, frames in inputs:
        out = tmp_path / label
        subprocess.run([EXE, "run", *cli_model, "--dtype", "float64", "--device", "cpu", *cli_input, "--size", "70x56",
                        "--raw-outputs", "--no-points", "--no-depth-maps", "--poses", "head", "--out", str(out)], check=True,
                       capture_output=True)
        with streamrecon.Reconstructor(**model, dtype="float64", device="cpu", size=(70, 56)) as rec:
            results = [rec.push(frame) for frame in frames()]
        assert len(results) == 6, label
        for r in results:
            cli = streamrecon.load_safetensors(out / "raw" / f"frame_{r.index:06d}.safetensors")
            for name in OUTPUTS:
                ours = getattr(r, name)
                assert ours.dtype == np.float64, name
                assert ours.shape == cli[name].shape, name
                np.testing.assert_allclose(ours, cli[name], rtol=1e-9, atol=1e-12, err_msg=f"{label} frame {r.index} {name}")
        # The trajectory the CLI wrote is the one write_tum writes from the results.
        streamrecon.write_tum(tmp_path / f"{label}.txt", results)
        assert (tmp_path / f"{label}.txt").read_text() == (out / "trajectory.txt").read_text(), label


def test_tracked_poses_are_the_clis(tmp_path):
    """poses="tracked" gives `streamrecon run`'s default cameras (the same trajectory.txt, digit for
    digit, both in float64) and a point map rebuilt from the depth; the default poses="head" gives the
    camera head's, which differ where the tracker measured the steps."""
    if not EXE or not os.path.exists(EXE):
        pytest.skip("STREAMRECON_EXE (the CLI of this build) is not set")
    if not streamrecon.can_track():
        pytest.skip("this build has no pose tracker (it needs OpenCV 4.4+ with features2d and calib3d)")
    out = tmp_path / "cli"
    subprocess.run([EXE, "run", "--device", "cpu", "--dtype", "float64", "--synthetic", "8", "--size", "112", "--poses", "tracked",
                    "--no-points", "--no-depth-maps", "--out", str(out)], check=True, capture_output=True)
    runs = {}
    for poses in ("tracked", "head"):
        with streamrecon.Reconstructor(device="cpu", dtype="float64", size=112, poses=poses) as rec:
            runs[poses] = [rec.push(frame) for frame in streamrecon.SyntheticScene("walk", frames=8, size=112)]
        streamrecon.write_tum(tmp_path / f"{poses}.txt", runs[poses])
    assert (tmp_path / "tracked.txt").read_text() == (out / "trajectory.txt").read_text()
    assert (tmp_path / "head.txt").read_text() != (out / "trajectory.txt").read_text()
    # The tracked point map is the depth unprojected with the tracked camera (pixel (u, v) at
    # integer coordinates, as geometry::UnprojectDepth).
    r = runs["tracked"][5]
    h, w = r.depth.shape
    v, u = np.mgrid[0:h, 0:w]
    k, e = r.intrinsic, r.extrinsic
    cam = np.stack([(u - k[0, 2]) * r.depth / k[0, 0], (v - k[1, 2]) * r.depth / k[1, 1], r.depth], -1)
    world = (cam - e[:, 3]) @ e[:, :3]  # R^T (x - t), row vectors
    np.testing.assert_allclose(r.world_points, world, rtol=1e-4, atol=1e-5)
    with pytest.raises(streamrecon.Error, match="--poses"):
        streamrecon.Reconstructor(device="cpu", poses="imu")


@pytest.mark.parametrize("output", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["full", "pruned"])
def test_tensor_frames_reproduce_the_reference(mode, output):
    """The fixture's model tensors (3xHxW float, pushed as NumPy arrays or torch tensors) give the
    reference's outputs (model.md: 1e-6 relative in float64), with the full and the pruned cache."""
    if output == "torch" and torch is None:
        pytest.skip("torch is not importable in this Python (scripts/setup.sh installs it)")
    weights = fixture_weights()
    stream = streamrecon.load_safetensors(need(PARITY / f"stream_{mode}.safetensors"))
    options = dict(policy="xstream", cache_tokens=60, pool=16) if mode == "pruned" else {}
    with streamrecon.Reconstructor(weights, dtype="float64", device="cpu", output=output, **options) as rec:
        for i in range(6):
            image = stream[f"frame{i}.image"].astype(np.float64)
            r = rec.push(torch.from_numpy(image) if output == "torch" else image)
            if output == "torch":
                assert isinstance(r.depth, torch.Tensor) and r.depth.device.type == "cpu" and r.depth.dtype == torch.float64
            for name in OUTPUTS:
                ref = stream[f"frame{i}.{name}"]
                got = np.asarray(getattr(r, name)).reshape(ref.shape)
                assert relative_l2(got, ref) <= 1e-6, f"frame {i} {name}: {relative_l2(got, ref):.2e}"


# ---- torch in and out ----------------------------------------------------------------------------

@needs_torch
def test_torch_tensors_in_and_out_on_the_cpu():
    model, _ = tiny_model()
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, size=(56, 70, 3), dtype=np.uint8) for _ in range(3)]
    with streamrecon.Reconstructor(**model, dtype="float64", device="cpu", size=(70, 56)) as rec:
        as_numpy = [rec.push(f) for f in frames]
        rec.reset()
        as_torch = [rec.push(torch.from_numpy(f), output="torch") for f in frames]
    for a, b in zip(as_numpy, as_torch):
        for name in OUTPUTS + ["extrinsic", "intrinsic"]:
            t = getattr(b, name)
            assert isinstance(t, torch.Tensor) and t.device.type == "cpu", name
            np.testing.assert_array_equal(t.numpy(), getattr(a, name), err_msg=name)
        assert b.extrinsic.shape == (3, 4) and b.intrinsic.shape == (3, 3)
    # Tensors that require grad are read, not refused.
    with streamrecon.Reconstructor(**model, device="cpu") as rec:
        x = torch.rand(3, 56, 70, requires_grad=True)
        assert rec.push(x).depth.shape == (56, 70)


@pytest.mark.skipif(torch is None or not torch.cuda.is_available() or not streamrecon.cuda_available(),
                    reason="no CUDA device (or this build has no CUDA cache): the CUDA half runs in the GPU tests")
def test_torch_tensors_in_and_out_on_cuda():
    weights = fixture_weights()
    stream = streamrecon.load_safetensors(need(PARITY / "stream_full.safetensors"))
    with streamrecon.Reconstructor(weights, device="cuda", output="torch") as gpu, \
            streamrecon.Reconstructor(weights, device="cpu") as cpu:
        for i in range(6):
            image = torch.from_numpy(stream[f"frame{i}.image"])
            r = gpu.push(image.cuda())
            ref = cpu.push(image)
            assert r.depth.is_cuda and r.world_points.is_cuda and r.extrinsic.is_cuda
            for name in OUTPUTS:
                got = getattr(r, name).cpu().numpy()
                # The CUDA path runs its matrix work in bf16 (model.md's bf16 deviations).
                assert relative_l2(got, getattr(ref, name)) <= 5e-2, f"frame {i} {name}"
        rgb = torch.from_numpy(np.ascontiguousarray((stream["frame0.image"].transpose(1, 2, 0) * 255).astype(np.uint8)))
        gpu.reset()
        assert gpu.push(rgb.cuda()).depth.is_cuda


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_input_raises_the_documented_exceptions(tmp_path):
    model, _ = tiny_model()
    with pytest.raises(streamrecon.FileError, match="nothing.safetensors") as e:
        streamrecon.Reconstructor(str(tmp_path / "nothing.safetensors"))
    assert isinstance(e.value, OSError) and isinstance(e.value, streamrecon.Error)
    with pytest.raises(streamrecon.OptionError, match="bogus") as e:
        streamrecon.Reconstructor(**model, policy="bogus")
    assert isinstance(e.value, ValueError)
    with pytest.raises(streamrecon.OptionError, match="output"):
        streamrecon.Reconstructor(**model, output="pandas")
    with pytest.raises(TypeError, match="kv_budget|kv-budget"):
        streamrecon.Reconstructor(**model, kv_budget=1.5)
    with pytest.raises(streamrecon.OptionError, match="size"):
        streamrecon.Reconstructor(**model, size="wide")
    with pytest.raises(streamrecon.OptionError, match="size"):
        streamrecon.Reconstructor(**model, size=(70.5, 56))
    with pytest.raises(streamrecon.FileError, match="no_such_folder"):
        streamrecon.open_frames(str(tmp_path / "no_such_folder"))
    with pytest.raises(streamrecon.OptionError, match="scene"):
        streamrecon.SyntheticScene("spiral")
    with pytest.raises(streamrecon.OptionError, match="bf16-heads"):
        streamrecon.Reconstructor(**model, device="cpu", bf16_heads=True)  # needs dtype="bfloat16"


    rec = streamrecon.Reconstructor(**model, device="cpu", size=(70, 56))
    with pytest.raises(TypeError, match="NumPy array or a torch tensor, got str"):
        rec.push("frame.png")
    with pytest.raises(ValueError, match=r"HxWx3 uint8.*shape \(56, 70\)"):
        rec.push(np.zeros((56, 70), dtype=np.uint8))
    with pytest.raises(TypeError, match="int16"):
        rec.push(np.zeros((56, 70, 3), dtype=np.int16))
    with pytest.raises(streamrecon.Error, match="multiple of the patch size 14"):
        rec.push(np.zeros((3, 50, 70), dtype=np.float32))
    # A refused first frame does not fix the stream: an image is still welcome after it.
    assert rec.push(np.zeros((56, 70, 3), dtype=np.uint8)).depth.shape == (56, 70)
    with pytest.raises(streamrecon.OptionError, match="started with images"):
        rec.push(np.zeros((3, 56, 70), dtype=np.float32))
    with pytest.raises(TypeError, match="streamrecon.Result"):
        streamrecon.write_tum(str(tmp_path / "t.txt"), [1, 2])
    with pytest.raises(streamrecon.OptionError, match="at least one"):
        streamrecon.write_tum(str(tmp_path / "t.txt"), [])
    rec.close()
    with pytest.raises(streamrecon.Error, match="closed"):
        rec.push(np.zeros((56, 70, 3), dtype=np.uint8))
    # A cache that cannot hold one frame: the CLI's message, naming its option.
    with pytest.raises(streamrecon.Error, match="cache-tokens|cache_tokens"):
        with streamrecon.Reconstructor(**model, policy="xstream", cache_tokens=3, size=(70, 56)) as small:
            small.push(np.zeros((56, 70, 3), dtype=np.uint8))


# ---- resources -----------------------------------------------------------------------------------

def test_bf16_heads_give_finite_results_close_to_the_fp32_heads():
    model, _ = tiny_model()
    frame = np.random.default_rng(1).integers(0, 256, size=(56, 70, 3), dtype=np.uint8)
    results = []
    for heads in (False, True):
        with streamrecon.Reconstructor(**model, device="cpu", dtype="bfloat16", bf16_heads=heads, size=(70, 56)) as rec:
            results.append(rec.push(frame))
    assert np.isfinite(results[1].depth).all()
    assert 0 < relative_l2(results[1].depth, results[0].depth) < 3e-2

def test_no_leak_over_1000_pushes():
    model, _ = tiny_model()
    frame = np.random.default_rng(0).integers(0, 256, size=(56, 70, 3), dtype=np.uint8)
    with streamrecon.Reconstructor(**model, device="cpu", policy="xstream", cache_tokens=60, size=(70, 56)) as rec:
        for _ in range(100):
            rec.push(frame)
        before = rss_bytes()
        for _ in range(900):
            r = rec.push(frame)
            assert r.depth.shape == (56, 70)
        after = rss_bytes()
        assert rec.frames_seen == 1000
        assert rec.cache_stats()["tokens_per_layer"] == [60, 60]
    # 900 results of ~80 KB each went through; a leak of one of them per push would be 70 MB.
    assert after - before < 8 * 2**20, f"RSS grew by {(after - before) / 2**20:.1f} MiB over 900 pushes"


def test_the_gil_is_released_during_a_step():
    rec = streamrecon.Reconstructor(device="cpu")  # the shipped default model: about 0.1 s a frame
    frame = np.random.default_rng(1).integers(0, 256, size=(168, 224, 3), dtype=np.uint8)
    rec.push(frame)  # warm-up
    ticks, stop = [], threading.Event()

    def spin():
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2000 == 0:
                ticks.append(time.perf_counter())

    worker = threading.Thread(target=spin)
    worker.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    r = rec.push(frame)
    t1 = time.perf_counter()
    stop.set()
    worker.join()
    assert t1 - t0 > 0.03, "the step was too short to tell"
    middle = [t for t in ticks if t0 + 0.25 * (t1 - t0) < t < t0 + 0.75 * (t1 - t0)]
    assert middle, f"the other thread made no progress during the {1000 * (t1 - t0):.0f} ms step"
    assert r.model_ms <= r.step_ms


# ---- the rest of the API -------------------------------------------------------------------------

def test_frames_synthetic_scene_cloud_exporters_and_evaluate(tmp_path):
    scene = streamrecon.SyntheticScene("orbit", frames=4, seed=5, size=(112, 84))
    assert len(scene) == 4 and (scene.width, scene.height) == (112, 84)
    f = scene[1]
    assert f.image.shape == (84, 112, 3) and f.depth.shape == (84, 112) and np.all(f.depth > 0)
    np.testing.assert_allclose(f.world_from_cam @ f.cam_from_world, np.eye(4), atol=1e-12)
    with pytest.raises(IndexError):
        scene[4]

    cloud = streamrecon.Cloud(voxel_size=0.0)
    with streamrecon.Reconstructor(size=112, device="cpu") as rec:
        results = [rec.push(frame) for frame in scene]
        assert rec.input_size == (112, 84)
        assert [r.name for r in results] == [f"synthetic:{i}" for i in range(4)]
        for r in results:
            cloud.add(r)
        stats = rec.cache_stats()
        assert stats["frames_seen"] == 4 and stats["bytes"] > 0
    points, colors = cloud.arrays()
    assert len(cloud) == len(points) > 0 and points.dtype == np.float32 and colors.dtype == np.uint8
    streamrecon.write_tum(tmp_path / "trajectory.txt", results)
    assert len((tmp_path / "trajectory.txt").read_text().splitlines()) == 1 + 4
    streamrecon.write_cameras_json(tmp_path / "cameras.json", results)

    metrics = streamrecon.evaluate("synthetic:walk", frames=4, scene_seed=3, size=112, out=str(tmp_path / "eval"), device="cpu")
    seq = metrics["sequences"][0]
    assert seq["frames"] == 4 and 0 < seq["depth_l1"]["abs_rel"] < 1 and "ate_rmse" in seq["pose"]
    assert (tmp_path / "eval" / "metrics.json").exists()
    assert metrics["mean"]["depth_l1"]["abs_rel"] == pytest.approx(seq["depth_l1"]["abs_rel"])
    if EXE and os.path.exists(EXE):  # the CLI's eval of the same sequence: the same numbers
        subprocess.run([EXE, "eval", "--dataset", "synthetic:walk", "--frames", "4", "--scene-seed", "3", "--size", "112",
                        "--device", "cpu", "--out", str(tmp_path / "cli_eval")], check=True, capture_output=True)
        import json
        cli = json.loads((tmp_path / "cli_eval" / "metrics.json").read_text())["sequences"][0]
        for group, field in [("depth_l1", "abs_rel"), ("depth_median", "delta_1"), ("pose", "ate_rmse")]:
            assert seq[group][field] == pytest.approx(cli[group][field], rel=1e-9), (group, field)

    need_ply()
    cloud.write_ply(tmp_path / "cloud.ply")
    header = (tmp_path / "cloud.ply").read_bytes()[:200].decode("latin1")
    assert f"element vertex {len(points)}" in header
    streamrecon.write_ply(tmp_path / "arrays.ply", points, colors)
    assert f"element vertex {len(points)}" in (tmp_path / "arrays.ply").read_bytes()[:200].decode("latin1")
    assert streamrecon.write_colmap(tmp_path / "colmap", results, cloud) == []
    assert len(list((tmp_path / "colmap" / "images").glob("*.png"))) == 4
    assert (tmp_path / "colmap" / "sparse" / "0" / "points3D.txt").exists()

    need_images()
    frames = list(streamrecon.open_frames(SAMPLES, max_frames=2))
    assert [fr.name for fr in frames] == ["0.jpg", "1.jpg"] and frames[0].image.ndim == 3
    assert not frames[0].image.flags.writeable


def test_the_examples_run(tmp_path):
    """docs/examples/: the folder-to-depth-plot script and the video-to-PLY loop, on the sample photos."""
    examples = pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples"
    need_images()
    need_ply()
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"))
    run = subprocess.run([os.sys.executable, str(examples / "reconstruct_folder.py"), str(SAMPLES), str(tmp_path / "depth.png")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "depth_trajectory.txt").read_text().splitlines()) == 1 + 6
    run = subprocess.run([os.sys.executable, str(examples / "video_to_ply.py"), str(SAMPLES), str(tmp_path / "cloud.ply")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and b"element vertex" in (tmp_path / "cloud.ply").read_bytes()[:300]


def test_views_of_arrays_are_read_as_numpy_shows_them():
    """Negative strides (img[..., ::-1], BGR to RGB) and big-endian arrays are what NumPy shows."""
    model, _ = tiny_model()
    bgr = np.random.default_rng(5).integers(0, 256, size=(56, 70, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    with streamrecon.Reconstructor(**model, dtype="float64", device="cpu", size=(70, 56)) as rec:
        a = rec.push(bgr[..., ::-1])
        rec.reset()
        b = rec.push(rgb)
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.image, rgb)
        rec.reset()
        c = rec.push(rgb.astype(np.float64).transpose(2, 0, 1).astype(">f8") / 255.0)
        rec.reset()
        d = rec.push(rgb.astype(np.float64).transpose(2, 0, 1) / 255.0)
        np.testing.assert_array_equal(c.depth, d.depth)


def test_ctrl_c_ends_evaluate_with_keyboard_interrupt():
    """A Ctrl-C (here _thread.interrupt_main) during evaluate() stops it and raises KeyboardInterrupt;
    the Reconstructor stays usable."""
    import _thread
    rec = streamrecon.Reconstructor(device="cpu", size=112)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        rec.evaluate("synthetic:walk", frames=400)  # about 40 s uninterrupted
    assert time.perf_counter() - t0 < 20
    timer.join()
    assert rec.frames_seen == 0  # reset after the evaluation
    assert rec.push(np.zeros((84, 112, 3), dtype=np.uint8)).depth.shape == (84, 112)


def test_other_threads_can_ask_while_a_step_runs():
    """cache_stats(), frames_seen and input_size from another thread during evaluate() answer once the
    call in progress lets go, without a deadlock (the GIL is never held while waiting)."""
    rec = streamrecon.Reconstructor(device="cpu", size=112)
    answers, errors = [], []

    def ask():
        try:
            for _ in range(5):
                answers.append((rec.cache_stats()["frames_seen"], rec.frames_seen, rec.input_size))
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    worker = threading.Thread(target=ask)
    worker.start()
    m = rec.evaluate("synthetic:walk", frames=6)
    worker.join(timeout=60)
    assert not worker.is_alive(), "a thread asking for cache_stats() hung"
    assert not errors and len(answers) == 5
    assert m["sequences"][0]["frames"] == 6
