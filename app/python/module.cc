// streamrecon._core: the engine behind `import streamrecon` (app/python/streamrecon/__init__.py
// re-exports it). It binds the same code the CLI runs, not a second implementation: OpenModel and
// the cache options (common_options.h), ModelStage (the resize and the step), the frame sources,
// the synthetic generator, the exporters, the point-cloud accumulator and Evaluate.
//
// Arrays cross the boundary without copies where they can: NumPy results share the CPU tensors'
// memory (the array keeps the tensor alive); torch results are handed over through DLPack, on the
// model's device; frames come in as NumPy arrays (buffer protocol) or anything with __dlpack__.
// The GIL is released while a frame is decoded, pushed or evaluated; one Reconstructor serialises
// its own calls.
#include <ATen/ATen.h>
#include <ATen/DLConvertor.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>
#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "app/common_options.h"
#include "app/evaluate.h"
#include "app/stream_setup.h"
#include "core/accumulator.h"
#include "core/byte_size.h"
#include "core/errors.h"
#include "core/export.h"
#include "core/geometry.h"
#include "core/kv/cache.h"
#include "datasets/calibration.h"
#include "datasets/frame_source.h"
#include "datasets/synthetic.h"
#include "models/weights.h"

namespace py = pybind11;

namespace streamrecon::app {
namespace {

using Clock = std::chrono::steady_clock;

// A lock taken with the GIL released (and the GIL taken back after the lock is let go): never wait
// for an engine's mutex while holding the GIL, which the thread holding the mutex may need.
class Unlocked {
 public:
  explicit Unlocked(std::mutex& mutex) : lock_(mutex) {}

 private:
  py::gil_scoped_release release_;  // (members are initialised in this order and destroyed in reverse)
  std::lock_guard<std::mutex> lock_;
};
double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// ---- Exceptions: streamrecon.Error (RuntimeError) and its kinds, with the CLI's messages -------

PyObject* g_error = nullptr;
PyObject* g_option_error = nullptr;
PyObject* g_file_error = nullptr;
PyObject* g_weights_error = nullptr;
PyObject* g_budget_error = nullptr;

PyObject* AddException(py::module_& m, const char* name, const py::tuple& bases, const char* doc) {
  const std::string qualified = std::string("streamrecon.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type));
  return type;
}

void RegisterExceptions(py::module_& m) {
  g_error = AddException(m, "Error", py::make_tuple(py::handle(PyExc_RuntimeError)),
                         "Base of StreamRecon's errors (a RuntimeError); the message says what was expected and what was found.");
  g_option_error = AddException(m, "OptionError", py::make_tuple(py::handle(g_error), py::handle(PyExc_ValueError)),
                                "A bad option or argument (also a ValueError). Options are named as the CLI spells them: "
                                "--cache-tokens is the keyword cache_tokens.");
  g_file_error = AddException(m, "FileError", py::make_tuple(py::handle(g_error), py::handle(PyExc_OSError)),
                              "A file that cannot be read or written, or is malformed (also an OSError); the message names it.");
  g_weights_error = AddException(m, "WeightsError", py::make_tuple(py::handle(g_error)),
                                 "Weights that do not match the model config (every bad key is listed).");
  g_budget_error = AddException(m, "BudgetError", py::make_tuple(py::handle(g_error), py::handle(PyExc_ValueError)),
                                "A KV-cache budget that cannot hold what the cache must keep (also a ValueError).");
  // Local to this module: torch shares pybind11 internals with modules of its version, and its own
  // errors (c10::Error) must stay torch's.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const BudgetError& e) {
      PyErr_SetString(g_budget_error, WithFlagNames(e.what()).c_str());
    } catch (const OptionError& e) {
      PyErr_SetString(g_option_error, WithFlagNames(e.what()).c_str());
    } catch (const FileError& e) {
      PyErr_SetString(g_file_error, e.what());
    } catch (const WeightsError& e) {
      PyErr_SetString(g_weights_error, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_error, e.what());
    } catch (const c10::Error& e) {
      PyErr_SetString(g_error, (std::string("LibTorch: ") + e.what_without_backtrace()).c_str());
    }
  });
}

// ---- Arrays ------------------------------------------------------------------------------------

// A NumPy array over a CPU tensor's memory (half-precision types become float32 first); the array
// keeps the tensor alive.
py::array ToNumpy(const at::Tensor& tensor) {
  at::Tensor t = tensor.device().is_cpu() ? tensor : tensor.cpu();
  if (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16) t = t.to(at::kFloat);
  py::dtype dtype;
  switch (t.scalar_type()) {
    case at::kFloat: dtype = py::dtype::of<float>(); break;
    case at::kDouble: dtype = py::dtype::of<double>(); break;
    case at::kByte: dtype = py::dtype::of<uint8_t>(); break;
    case at::kChar: dtype = py::dtype::of<int8_t>(); break;
    case at::kShort: dtype = py::dtype::of<int16_t>(); break;
    case at::kInt: dtype = py::dtype::of<int32_t>(); break;
    case at::kLong: dtype = py::dtype::of<int64_t>(); break;
    case at::kBool: dtype = py::dtype::of<bool>(); break;
    default: throw Error(std::string("no NumPy type for a tensor of ") + c10::toString(t.scalar_type()));
  }
  std::vector<py::ssize_t> shape(t.sizes().begin(), t.sizes().end()), strides;
  for (int64_t s : t.strides()) strides.push_back(static_cast<py::ssize_t>(s * t.element_size()));
  auto* owner = new at::Tensor(t);
  py::capsule base(owner, [](void* p) { delete static_cast<at::Tensor*>(p); });
  return py::array(dtype, shape, strides, t.data_ptr(), base);
}

// torch.from_dlpack, imported on first use with the GIL held and kept for the process's life
// (released, never destroyed: no Python object may die after finalisation). Raises ImportError
// without torch.
py::handle TorchFromDlpack() {
  static PyObject* from_dlpack = nullptr;
  if (from_dlpack == nullptr) from_dlpack = py::object(py::module_::import("torch").attr("from_dlpack")).release().ptr();
  return from_dlpack;
}

// A torch.Tensor sharing the tensor's memory, on its device, through DLPack.
py::object ToTorch(const at::Tensor& tensor) {
  DLManagedTensor* managed = at::toDLPack(tensor);
  PyObject* capsule = PyCapsule_New(managed, "dltensor", [](PyObject* self) {
    // Deleted here only when torch did not take it (a consumer renames the capsule).
    if (PyCapsule_IsValid(self, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(self, "dltensor"));
      if (m != nullptr && m->deleter != nullptr) m->deleter(m);
    }
  });
  if (capsule == nullptr) {
    managed->deleter(managed);
    throw py::error_already_set();
  }
  return TorchFromDlpack()(py::reinterpret_steal<py::object>(capsule));
}

std::string Shape(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + (t.dim() == 1 ? ",)" : ")");
}

// A NumPy array (copied) or an object with __dlpack__ (torch, CuPy, JAX, ...; shared) as a tensor.
at::Tensor TensorFromPython(py::handle obj, const char* what) {
  if (py::isinstance<py::array>(obj)) {
    py::array a = py::reinterpret_borrow<py::array>(obj);
    // LibTorch takes neither negative strides (img[..., ::-1]) nor a foreign byte order: such arrays
    // are copied into a plain one first.
    bool plain = a.dtype().attr("isnative").cast<bool>();
    for (py::ssize_t i = 0; i < a.ndim(); ++i) plain = plain && a.strides(i) >= 0;
    if (!plain) {
      py::module_ np = py::module_::import("numpy");
      a = np.attr("ascontiguousarray")(a, py::arg("dtype") = a.dtype().attr("newbyteorder")("=")).cast<py::array>();
    }
    const py::buffer_info info = a.request();
    at::ScalarType type;
    const char kind = a.dtype().kind();
    if (kind == 'u' && info.itemsize == 1) type = at::kByte;
    else if (kind == 'f' && info.itemsize == 4) type = at::kFloat;
    else if (kind == 'f' && info.itemsize == 8) type = at::kDouble;
    else
      throw py::type_error(std::string(what) + ": expected a uint8, float32 or float64 array, got dtype " +
                           py::str(a.dtype()).cast<std::string>());
    std::vector<int64_t> sizes(info.shape.begin(), info.shape.end()), strides;
    for (py::ssize_t s : info.strides) {
      if (s % info.itemsize != 0) throw py::value_error(std::string(what) + ": the array's strides are not whole elements");
      strides.push_back(s / info.itemsize);
    }
    // A copy, made while the GIL is held: the array's memory is only borrowed.
    return at::from_blob(info.ptr, sizes, strides, at::TensorOptions().dtype(type)).clone();
  }
  if (py::hasattr(obj, "__dlpack__")) {
    // A tensor that requires grad cannot be exported; the engine only reads it.
    py::object source = py::hasattr(obj, "detach") ? obj.attr("detach")() : py::reinterpret_borrow<py::object>(obj);
    py::object capsule = source.attr("__dlpack__")();
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
    if (managed == nullptr) throw py::error_already_set();
    at::Tensor tensor = at::fromDLPack(managed);
    PyCapsule_SetName(capsule.ptr(), "used_dltensor");  // ours now: the tensor calls its deleter
    return tensor;
  }
  throw py::type_error(std::string(what) + ": expected a NumPy array or a torch tensor, got " +
                       py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
}

RgbImage RgbFromTensor(const at::Tensor& hwc) {
  const at::Tensor t = hwc.to(at::kCPU).contiguous();
  RgbImage image;
  image.height = static_cast<int>(t.size(0));
  image.width = static_cast<int>(t.size(1));
  image.data.assign(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + t.numel());
  return image;
}

py::array ImageArray(const std::shared_ptr<const RgbImage>& image) {
  // A read-only view of the image (kept alive by the array).
  auto* owner = new std::shared_ptr<const RgbImage>(image);
  py::capsule base(owner, [](void* p) { delete static_cast<std::shared_ptr<const RgbImage>*>(p); });
  py::array a(py::dtype::of<uint8_t>(), {image->height, image->width, 3}, {image->width * 3, 3, 1}, image->data.data(), base);
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return a;
}

py::array MatrixArray(const std::vector<double>& values, int rows, int cols) {
  py::array_t<double> a({rows, cols});
  std::memcpy(a.mutable_data(), values.data(), values.size() * sizeof(double));
  return a;
}

// [R | t] row-major, with the row (0, 0, 0, 1) when rows == 4.
std::vector<double> RigidRows(const Rigid3& t, int rows) {
  std::vector<double> m(static_cast<size_t>(rows) * 4, 0.0);
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) m[r * 4 + c] = t.R[r * 3 + c];
    m[r * 4 + 3] = t.t[r];
  }
  if (rows == 4) m[15] = 1;
  return m;
}

std::vector<double> IntrinsicsRows(const Intrinsics& k) { return {k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1}; }

py::array Rigid4x4(const Rigid3& t) { return MatrixArray(RigidRows(t, 4), 4, 4); }
py::array IntrinsicsArray(const Intrinsics& k) { return MatrixArray(IntrinsicsRows(k), 3, 3); }

py::object JsonToPython(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return py::str(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      py::list list;
      for (const auto& v : j) list.append(JsonToPython(v));
      return list;
    }
    default: {
      py::dict dict;
      for (auto it = j.begin(); it != j.end(); ++it) dict[py::str(it.key())] = JsonToPython(it.value());
      return dict;
    }
  }
}

// ---- Frames ------------------------------------------------------------------------------------

struct PyFrame {
  int64_t index = 0;
  double timestamp = 0;
  std::string name;
  std::shared_ptr<const RgbImage> image;
};

PyFrame WrapFrame(Frame frame) {
  PyFrame f;
  f.index = frame.index;
  f.timestamp = frame.timestamp;
  f.name = std::move(frame.name);
  f.image = std::make_shared<const RgbImage>(std::move(frame.image));
  return f;
}

struct PySyntheticFrame {
  PyFrame frame;
  std::shared_ptr<const std::vector<float>> depth;
  Rigid3 world_from_cam;
  Intrinsics intrinsics;
};

// Frames of a source, as Python's iterator protocol wants them.
class FrameIterator {
 public:
  explicit FrameIterator(std::unique_ptr<datasets::FrameSource> source) : source_(std::move(source)) {}
  PyFrame Next() {
    std::optional<Frame> frame;
    {
      const Unlocked lock(mutex_);
      frame = source_->Next();
    }
    if (!frame) throw py::stop_iteration();
    return WrapFrame(std::move(*frame));
  }
  int64_t SizeHint() {
    const Unlocked lock(mutex_);
    return source_->SizeHint();
  }
  int64_t Skipped() {
    const Unlocked lock(mutex_);
    return source_->skipped();
  }
  std::string Describe() {
    const Unlocked lock(mutex_);
    return source_->Describe();
  }

 private:
  std::mutex mutex_;
  std::unique_ptr<datasets::FrameSource> source_;
};

// ---- Results -----------------------------------------------------------------------------------

// One pushed frame: its outputs (NumPy arrays or torch tensors), its camera and timings. The
// tensors are kept too, for the exporters and the point cloud.
struct PyResult {
  CameraRecord camera;
  std::shared_ptr<const RgbImage> image;
  models::StepOutput tensors;
  py::object depth, depth_conf, world_points, world_points_conf, extrinsic, intrinsic, pose_enc;
  double step_ms = 0;  // the whole push: conversion of the input, resize, step, outputs
  int64_t cache_bytes = 0;

  FramePrediction Prediction() const {
    FramePrediction p = models::ToFramePrediction(tensors, *image, camera.index);
    static_cast<CameraRecord&>(p) = camera;
    return p;
  }
};

std::vector<CameraRecord> Cameras(const std::vector<std::shared_ptr<PyResult>>& results) {
  std::vector<CameraRecord> cameras;
  for (const auto& r : results) cameras.push_back(r->camera);
  return cameras;
}

// ---- The point cloud, accumulated as `run` does ------------------------------------------------

class PyCloud {
 public:
  PyCloud(float conf_threshold, int stride, double voxel_size, int64_t max_points, bool points_from_depth)
      : accumulator_([&] {
          AccumulatorOptions o;
          o.frame.conf_threshold = conf_threshold;
          o.frame.stride = stride;
          o.frame.voxel_size = voxel_size;
          o.frame.use_depth = points_from_depth;
          o.voxel_size = voxel_size;
          o.max_points = max_points;
          return o;
        }()) {}
  void Add(const PyResult& result) {
    const FramePrediction p = result.Prediction();
    const Unlocked lock(mutex_);
    accumulator_.Add(p);
    cameras_.push_back(result.camera);
  }
  // The points and the cameras added so far (GIL released while waiting and copying).
  std::pair<PointCloud, std::vector<CameraRecord>> Collect() {
    const Unlocked lock(mutex_);
    return {accumulator_.Snapshot().Collect(-std::numeric_limits<float>::infinity()), cameras_};
  }
  size_t size() {
    const Unlocked lock(mutex_);
    return accumulator_.size();
  }
  void Clear() {
    const Unlocked lock(mutex_);
    accumulator_.Clear();
    cameras_.clear();
  }
  double voxel_size() {
    const Unlocked lock(mutex_);
    return accumulator_.voxel_size();
  }

 private:
  std::mutex mutex_;
  PointCloudAccumulator accumulator_;
  std::vector<CameraRecord> cameras_;
};

py::tuple CloudArrays(const PointCloud& cloud) {
  py::array_t<float> xyz({static_cast<py::ssize_t>(cloud.size()), py::ssize_t{3}});
  py::array_t<uint8_t> rgb({static_cast<py::ssize_t>(cloud.size()), py::ssize_t{3}});
  if (cloud.size() > 0) {
    std::memcpy(xyz.mutable_data(), cloud.xyz.data(), cloud.xyz.size() * sizeof(float));
    std::memcpy(rgb.mutable_data(), cloud.rgb.data(), cloud.rgb.size());
  }
  return py::make_tuple(xyz, rgb);
}

PointCloud CloudFromArrays(py::handle points, py::handle colors) {
  const at::Tensor xyz = TensorFromPython(points, "points").to(at::kCPU, at::kFloat).contiguous();
  if (xyz.dim() != 2 || xyz.size(1) != 3) throw py::value_error("points: expected an (N, 3) array, got shape " + Shape(xyz));
  PointCloud cloud;
  cloud.xyz.assign(xyz.data_ptr<float>(), xyz.data_ptr<float>() + xyz.numel());
  if (colors.is_none()) {
    cloud.rgb.assign(cloud.xyz.size(), 200);
  } else {
    const at::Tensor rgb = TensorFromPython(colors, "colors").to(at::kCPU).contiguous();
    if (rgb.scalar_type() != at::kByte || rgb.dim() != 2 || rgb.size(1) != 3 || rgb.size(0) != xyz.size(0))
      throw py::value_error("colors: expected an (N, 3) uint8 array with N = " + std::to_string(xyz.size(0)) + ", got shape " +
                            Shape(rgb) + " of " + c10::toString(rgb.scalar_type()));
    cloud.rgb.assign(rgb.data_ptr<uint8_t>(), rgb.data_ptr<uint8_t>() + rgb.numel());
  }
  return cloud;
}

// ---- The engine --------------------------------------------------------------------------------

std::string ByteOption(py::handle value, const char* name) {
  if (value.is_none()) return "";
  if (py::isinstance<py::str>(value)) return value.cast<std::string>();
  if (py::isinstance<py::int_>(value) && !py::isinstance<py::bool_>(value)) {
    const int64_t n = value.cast<int64_t>();
    if (n <= 0) throw OptionError(std::string(name) + ": expected a positive number of bytes, got " + std::to_string(n));
    return std::to_string(n);
  }
  throw py::type_error(std::string(name) + ": expected bytes as an int or a string such as \"1GiB\", got " +
                       py::str(py::type::handle_of(value).attr("__name__")).cast<std::string>());
}

std::string SizeOption(py::handle value) {
  if (value.is_none()) return "";
  if (py::isinstance<py::str>(value)) return value.cast<std::string>();
  if (py::isinstance<py::int_>(value) && !py::isinstance<py::bool_>(value)) return std::to_string(value.cast<int64_t>());
  if ((py::isinstance<py::tuple>(value) || py::isinstance<py::list>(value)) && py::len(value) == 2) {
    std::vector<int64_t> wh;
    for (py::handle v : value)
      if (py::isinstance<py::int_>(v) && !py::isinstance<py::bool_>(v)) wh.push_back(v.cast<int64_t>());
    if (wh.size() == 2) return std::to_string(wh[0]) + "x" + std::to_string(wh[1]);
  }
  throw OptionError("--size expects W, \"WxH\" or (W, H) in pixels, got " + py::repr(value).cast<std::string>());
}

class Reconstructor {
 public:
  Reconstructor(const std::optional<std::filesystem::path>& weights, const std::optional<std::filesystem::path>& config, const std::string& device,
                const std::string& dtype, const std::string& policy, const std::string& format, py::object kv_budget,
                std::optional<int64_t> cache_tokens, int pool, int k_group, int v_group, bool first_frame_bf16,
                bool v_hadamard, uint64_t prune_seed, py::object size, const std::optional<std::filesystem::path>& intrinsics,
                std::optional<int64_t> random_seed, bool cuda_graphs, bool bf16_heads, const std::string& output,
                const std::string& poses) {
    model_args_.weights = weights ? weights->string() : "";
    model_args_.config = config ? config->string() : "";
    model_args_.device = device;
    model_args_.dtype = dtype;
    model_args_.random_seed = random_seed.value_or(-1);
    model_args_.cuda_graphs = cuda_graphs;
    model_args_.bf16_heads = bf16_heads;
    cache_args_.policy = policy;
    cache_args_.format = format;
    cache_args_.budget = ByteOption(kv_budget, "--kv-budget");
    cache_args_.cache_tokens = cache_tokens.value_or(0);
    cache_args_.pool = pool;
    cache_args_.k_group = k_group;
    cache_args_.v_group = v_group;
    cache_args_.first_frame_bf16 = first_frame_bf16;
    cache_args_.v_hadamard = v_hadamard;
    cache_args_.prune_seed = prune_seed;
    size_ = SizeOption(size);
    output_ = CheckOutput(output);
    track_ = ResolvePoses(poses);  // before the model loads
    if (model_args_.random_seed < -1) throw OptionError("--random-seed: expected >= 0, got " + std::to_string(model_args_.random_seed));
    {
      py::gil_scoped_release release;
      opened_ = OpenModel(model_args_, &cache_args_);
      pre_ = ParseSize(size_, opened_.loaded.config.patch_size, opened_.loaded.config.img_size);
      if (intrinsics) {
        known_ = datasets::ParseIntrinsics(intrinsics->string());
        if (!known_->note.empty()) spdlog::warn("{}", known_->note);
      }
      NewStream();
    }
  }

  std::shared_ptr<PyResult> Push(py::handle frame, const std::optional<std::string>& output_override) {
    const std::string output = output_override ? CheckOutput(*output_override) : output_;
    if (output == "torch") TorchFromDlpack();  // without torch, fail before the frame is consumed
    const auto t0 = Clock::now();
    // What came in: a Frame (or SyntheticFrame) from this module, an HxWx3 uint8 image, or a
    // 3xHxW float image in [0, 1] that goes to the model as it is.
    Frame in;
    at::Tensor float_image;
    bool have_frame = false;
    if (py::isinstance<PyFrame>(frame) || py::isinstance<PySyntheticFrame>(frame)) {
      const PyFrame& f = py::isinstance<PyFrame>(frame) ? frame.cast<const PyFrame&>() : frame.cast<const PySyntheticFrame&>().frame;
      in.index = f.index;
      in.timestamp = f.timestamp;
      in.name = f.name;
      in.image = *f.image;
      have_frame = true;
    } else {
      const at::Tensor t = TensorFromPython(frame, "push");
      if (t.scalar_type() == at::kByte && t.dim() == 3 && t.size(2) == 3 && t.size(0) > 0 && t.size(1) > 0) {
        in.image = RgbFromTensor(t);
      } else if (at::isFloatingType(t.scalar_type()) && t.dim() == 3 && t.size(0) == 3 && t.size(1) > 0 && t.size(2) > 0) {
        float_image = t;
      } else {
        throw py::value_error("push: expected an HxWx3 uint8 RGB image or a 3xHxW float image in [0, 1], got shape " + Shape(t) +
                              " of " + c10::toString(t.scalar_type()));
      }
    }

    auto result = std::make_shared<PyResult>();
    std::array<double, 9> pose{};
    at::Tensor extrinsic, intrinsic;
    {
      const Unlocked lock(mutex_);
      if (!opened_.model) throw Error("this Reconstructor is closed");
      const int64_t index = opened_.model->frames_seen();
      if (!have_frame) {
        in.index = index;
        in.timestamp = static_cast<double>(index);
        in.name = "frame " + std::to_string(index);
      }
      ModelStage::Output out;
      if (float_image.defined()) {
        const int64_t H = float_image.size(1), W = float_image.size(2);
        if (kind_ == Kind::kImages)
          throw OptionError("push: frame " + std::to_string(index) + " is a 3xHxW model tensor, but this stream started with images; reset() first");
        if (kind_ == Kind::kTensors && (tensor_size_.first != W || tensor_size_.second != H))
          throw OptionError("push: frame " + std::to_string(index) + " is " + std::to_string(W) + "x" + std::to_string(H) +
                            ", but this stream's model input is " + std::to_string(tensor_size_.first) + "x" +
                            std::to_string(tensor_size_.second) + " (fixed by its first frame); reset() first");
        if (known_) throw OptionError("intrinsics: a known camera needs frames as images (HxWx3 uint8), not model tensors");
        const auto s0 = Clock::now();
        out.tensors = opened_.model->Step(float_image);
        out.model_ms = MsSince(s0);
        kind_ = Kind::kTensors;  // (after the step: a refused first frame does not fix the stream's kind)
        tensor_size_ = {W, H};
        out.image = RgbFromTensor((float_image.detach().to(at::kFloat).clamp(0, 1) * 255).round().to(at::kByte).permute({1, 2, 0}));
      } else {
        if (kind_ == Kind::kTensors)
          throw OptionError("push: frame " + std::to_string(index) + " is an image, but this stream started with 3xHxW model tensors; reset() first");
        out = stage_->Run(in);
        kind_ = Kind::kImages;
      }
      // On a GPU, Step returns once its work is queued (with CUDA graphs, once the graph is
      // launched): model_ms takes in the wait for that work, as the CLI's does, so that
      // Result.model_ms is the step's time and step_ms - model_ms what the call adds around it.
      if (out.tensors.depth.is_cuda()) {
        const auto w0 = Clock::now();
        models::RecordOnCurrentStream(out.tensors.depth.device())->synchronize();
        out.model_ms += MsSince(w0);
      }
      const at::Tensor pose_host = out.tensors.pose_enc.to(at::kCPU, at::kDouble).contiguous();
      std::copy(pose_host.data_ptr<double>(), pose_host.data_ptr<double>() + 9, pose.begin());
      result->camera.index = in.index;
      result->camera.timestamp = in.timestamp;
      result->camera.source_name = in.name;
      result->camera.height = out.image.height;
      result->camera.width = out.image.width;
      result->camera.pose_enc = pose;
      result->camera.known_intrinsics = out.known_intrinsics;
      result->camera.model_ms = out.model_ms;
      result->image = std::make_shared<const RgbImage>(std::move(out.image));
      result->tensors = std::move(out.tensors);
      result->tensors.tokens_last = at::Tensor();  // not exposed; would keep memory on the device
      result->cache_bytes = opened_.model->CacheBytes();
      if (tracker_) {
        // As `run --poses tracked`: the camera measured on the depth, the point map rebuilt from
        // it; the tracked arrays replace the model's, in their dtype and on their device.
        FramePrediction p = models::ToFramePrediction(result->tensors, *result->image, in.index);
        static_cast<CameraRecord&>(p) = result->camera;
        tracker_->Track(p);
        pose = p.pose_enc;
        result->camera.pose_enc = pose;
        auto& t = result->tensors;
        auto replace = [](const at::Tensor& like, std::vector<float>& values) {
          return at::from_blob(values.data(), like.sizes(), at::kFloat).to(like.options(), /*non_blocking=*/false, /*copy=*/true);
        };
        t.world_points = replace(t.world_points, p.world_points);
        t.world_points_conf = replace(t.world_points_conf, p.world_points_conf);
        t.pose_enc = at::tensor(std::vector<double>(pose.begin(), pose.end()), at::kDouble).view(t.pose_enc.sizes()).to(t.pose_enc.options());
      }

      // The camera as matrices, in the outputs' dtype and on their device.
      const Rigid3 cam_from_world = geometry::PoseEncodingToExtrinsics(pose);
      const Intrinsics k = out.known_intrinsics ? *out.known_intrinsics
                                                : geometry::PoseEncodingToIntrinsics(pose, result->camera.width, result->camera.height);
      const at::TensorOptions like = result->tensors.depth.options();
      const bool torch_out = output == "torch";
      const at::TensorOptions where = torch_out ? like : like.device(at::kCPU);
      extrinsic = at::tensor(RigidRows(cam_from_world, 3), at::kDouble).view({3, 4}).to(where);
      intrinsic = at::tensor(IntrinsicsRows(k), at::kDouble).view({3, 3}).to(where);
      if (!torch_out) {  // one host copy of each, before the GIL is taken again
        auto& t = result->tensors;
        t.depth = t.depth.cpu();
        t.depth_conf = t.depth_conf.cpu();
        t.world_points = t.world_points.cpu();
        t.world_points_conf = t.world_points_conf.cpu();
        t.pose_enc = t.pose_enc.cpu();
      }
    }
    const auto& t = result->tensors;
    auto convert = [&](const at::Tensor& x) { return output == "torch" ? ToTorch(x) : py::object(ToNumpy(x)); };
    result->depth = convert(t.depth.squeeze(-1));
    result->depth_conf = convert(t.depth_conf);
    result->world_points = convert(t.world_points);
    result->world_points_conf = convert(t.world_points_conf);
    result->pose_enc = convert(t.pose_enc);
    result->extrinsic = convert(extrinsic);
    result->intrinsic = convert(intrinsic);
    result->step_ms = MsSince(t0);
    return result;
  }

  void Reset() {
    const Unlocked lock(mutex_);
    Model().Reset();
    NewStream();
  }

  void Close() {
    const Unlocked lock(mutex_);
    stage_.reset();
    opened_.model.reset();
  }

  py::dict CacheStats() {
    models::CacheReport report;
    int64_t frames = 0;
    {
      const Unlocked lock(mutex_);
      report = Model().Cache();
      frames = Model().frames_seen();
    }
    py::dict d;
    d["format"] = report.format;
    d["policy"] = report.policy;
    d["budget_bytes"] = report.budget_bytes;
    d["bytes"] = report.bytes;
    d["max_bytes"] = report.max_bytes;
    d["global_bytes"] = report.global_bytes;
    d["tokens_per_layer"] = report.tokens_per_layer;
    d["trunk_tokens"] = report.trunk_tokens;
    d["effective_bits"] = report.effective_bits;
    d["frames_seen"] = frames;
    return d;
  }

  py::object Evaluate(const EvalOptions& options, const std::optional<std::filesystem::path>& out) {
    nlohmann::json report;
    {
      const Unlocked lock(mutex_);
      Model();
      WeightsRecord weights(opened_.loaded, model_args_.random_seed);
      // Ctrl-C in Python ends the sequence in progress, as in the CLI; KeyboardInterrupt follows.
      // PyErr_CheckSignals reports a signal once: the answer is latched.
      bool stop = false;
      const auto interrupted = [&stop] {
        if (!stop) {
          py::gil_scoped_acquire acquire;
          stop = PyErr_CheckSignals() != 0;
        }
        return stop;
      };
      struct StreamReset {  // the stream is reset after the evaluation, also when it throws
        Reconstructor* self;
        ~StreamReset() {
          self->opened_.model->Reset();
          self->NewStream();
        }
      } reset{this};
      report = app::Evaluate(*opened_.model, opened_.loaded, weights, model_args_, cache_args_, options, out ? *out : std::filesystem::path(), interrupted);
    }
    if (PyErr_Occurred()) throw py::error_already_set();
    return JsonToPython(report);
  }

  py::dict Config() const { return JsonToPython(opened_.loaded.config.ToJson()).cast<py::dict>(); }
  std::string Device() const { return model_args_.Device(); }
  std::string Dtype() const { return model_args_.dtype; }
  std::string WeightsPath() const { return opened_.loaded.weights_path; }
  std::string Output() const { return output_; }
  const std::string& Size() const { return size_; }
  int64_t FramesSeen() {
    const Unlocked lock(mutex_);
    return Model().frames_seen();
  }
  py::object InputSize() {
    std::pair<int64_t, int64_t> size{0, 0};
    {
      const Unlocked lock(mutex_);
      if (kind_ == Kind::kTensors) size = tensor_size_;
      else if (stage_) size = stage_->InputSize();
    }
    if (size.first == 0) return py::none();
    return py::make_tuple(size.first, size.second);
  }
  bool closed() {
    const Unlocked lock(mutex_);
    return !opened_.model;
  }

 private:
  enum class Kind { kUnknown, kImages, kTensors };

  static std::string CheckOutput(const std::string& output) {
    if (output != "numpy" && output != "torch") throw OptionError("output: expected \"numpy\" or \"torch\", got \"" + output + "\"");
    return output;
  }
  // A new stream: the model input size is fixed again by its first frame.
  void NewStream() {
    stage_ = std::make_shared<ModelStage>(opened_.model, pre_);
    tracker_ = track_ ? std::make_unique<PoseTracker>() : nullptr;
    if (known_) stage_->SetKnownCamera(*known_);
    kind_ = Kind::kUnknown;
    tensor_size_ = {0, 0};
  }
  models::StreamingModel& Model() {
    if (!opened_.model) throw Error("this Reconstructor is closed");
    return *opened_.model;
  }

  ModelArgs model_args_;
  CacheArgs cache_args_;
  bool track_ = false;                     // poses="tracked" (or "auto" with a tracker in this build)
  std::unique_ptr<PoseTracker> tracker_;   // this stream's, with track_
  std::string size_, output_;
  OpenedModel opened_;
  datasets::PreprocessOptions pre_;
  std::shared_ptr<ModelStage> stage_;
  std::optional<datasets::KnownCamera> known_;
  std::mutex mutex_;  // one call into the model at a time
  Kind kind_ = Kind::kUnknown;
  std::pair<int64_t, int64_t> tensor_size_{0, 0};
};

std::vector<std::shared_ptr<PyResult>> ResultList(py::handle results) {
  std::vector<std::shared_ptr<PyResult>> list;
  for (py::handle r : results) {
    if (!py::isinstance<PyResult>(r))
      throw py::type_error("expected a sequence of streamrecon.Result (what Reconstructor.push returns), got an item of type " +
                           py::str(py::type::handle_of(r).attr("__name__")).cast<std::string>());
    list.push_back(r.cast<std::shared_ptr<PyResult>>());
  }
  if (list.empty()) throw OptionError("results: expected at least one Result, got none");
  return list;
}


}  // namespace

void DefineModule(py::module_& m) {
  m.doc() = "StreamRecon's engine (see help(streamrecon) for the documented API).";
  RegisterExceptions(m);

  py::class_<PyFrame>(m, "Frame", "One frame of a source: its RGB image and where it came from.")
      .def_readonly("index", &PyFrame::index, "Position in the stream (0, 1, 2, ...).")
      .def_readonly("timestamp", &PyFrame::timestamp, "Seconds (videos, cameras) or the frame's position (images).")
      .def_readonly("name", &PyFrame::name, "File name, or 'video:N' / 'camera:N'.")
      .def_property_readonly("image", [](const PyFrame& f) { return ImageArray(f.image); }, "HxWx3 uint8 RGB (read-only view).")
      .def_property_readonly("width", [](const PyFrame& f) { return f.image->width; })
      .def_property_readonly("height", [](const PyFrame& f) { return f.image->height; })
      .def("__repr__", [](const PyFrame& f) {
        return "<streamrecon.Frame " + std::to_string(f.index) + " '" + f.name + "' " + std::to_string(f.image->width) + "x" +
               std::to_string(f.image->height) + ">";
      });

  py::class_<FrameIterator>(m, "FrameSource", "Frames of a folder, glob, video or camera (open_frames).")
      .def("__iter__", [](FrameIterator& it) -> FrameIterator& { return it; }, py::return_value_policy::reference_internal)
      .def("__next__", &FrameIterator::Next)
      .def_property_readonly("size_hint", &FrameIterator::SizeHint, "Frames it expects to deliver; -1 when unknown (cameras).")
      .def_property_readonly("skipped", &FrameIterator::Skipped, "Damaged frames skipped so far (strict=False).")
      .def("__repr__", [](FrameIterator& it) { return "<streamrecon.FrameSource " + it.Describe() + ">"; });

  m.def(
      "open_frames",
      [](const std::filesystem::path& path, int every, std::optional<int64_t> max_frames, bool strict) {
        datasets::SourceOptions so;
        so.every = every;
        so.max_frames = max_frames.value_or(-1);
        so.strict = strict;
        so.on_note = [](const std::string& note) { spdlog::warn("{}", note); };
        so.on_skip = [](const std::string& message) { spdlog::warn("{}", message); };
        std::unique_ptr<datasets::FrameSource> source;
        {
          py::gil_scoped_release release;
          source = datasets::OpenFrameSource(path.string(), so);
        }
        return std::make_unique<FrameIterator>(std::move(source));
      },
      py::arg("path"), py::kw_only(), py::arg("every") = 1, py::arg("max_frames") = py::none(), py::arg("strict") = false,
      "Frames of an image folder, a glob, one image, a video file or 'camera:N', as the CLI's --input reads them.");

  py::class_<PySyntheticFrame>(m, "SyntheticFrame", "A rendered frame with its exact ground truth.")
      .def_property_readonly("frame", [](const PySyntheticFrame& f) { return f.frame; })
      .def_property_readonly("index", [](const PySyntheticFrame& f) { return f.frame.index; })
      .def_property_readonly("image", [](const PySyntheticFrame& f) { return ImageArray(f.frame.image); }, "HxWx3 uint8 RGB.")
      .def_property_readonly(
          "depth",
          [](const PySyntheticFrame& f) {
            py::array_t<float> a({f.frame.image->height, f.frame.image->width});
            std::memcpy(a.mutable_data(), f.depth->data(), f.depth->size() * sizeof(float));
            return a;
          },
          "HxW float32 metres along the optical axis.")
      .def_property_readonly("world_from_cam", [](const PySyntheticFrame& f) { return Rigid4x4(f.world_from_cam); },
                             "4x4 camera-to-world (OpenCV axes: x right, y down, z forward; world z up).")
      .def_property_readonly("cam_from_world", [](const PySyntheticFrame& f) { return Rigid4x4(geometry::Inverse(f.world_from_cam)); })
      .def_property_readonly("intrinsic", [](const PySyntheticFrame& f) { return IntrinsicsArray(f.intrinsics); }, "3x3 K in pixels.")
      .def("__repr__", [](const PySyntheticFrame& f) { return "<streamrecon.SyntheticFrame " + std::to_string(f.frame.index) + ">"; });

  py::class_<datasets::SyntheticScene, std::shared_ptr<datasets::SyntheticScene>>(
      m, "SyntheticScene",
      "A procedurally textured room or outdoor square seen along a walk, orbit or pan, rendered with exact depth, poses and "
      "intrinsics (the scenes the default model was trained on; seeds below 100000 were never used in training).")
      .def(py::init([](const std::string& scene, int frames, uint64_t seed, py::object size, std::optional<double> fov_x_deg) {
             datasets::SyntheticOptions o;
             o.frames = frames;
             o.seed = seed;
             datasets::ApplySyntheticVariant(scene, o, "scene '" + scene + "'");
             const std::string wh = SizeOption(size);
             datasets::PreprocessOptions pre;
             pre.patch = 14;
             pre.target_width = 224;
             if (!wh.empty() && !datasets::ParsePixelSize(wh, &pre.target_width, &pre.target_height))
               throw OptionError("size: expected W, \"WxH\" or (W, H) in pixels, got '" + wh + "'");
             std::tie(o.width, o.height) = datasets::ModelInputSize(640, 480, pre);
             if (fov_x_deg) o.fov_x_deg = *fov_x_deg;
             return std::make_shared<datasets::SyntheticScene>(o);
           }),
           py::arg("scene") = "walk", py::kw_only(), py::arg("frames") = 24, py::arg("seed") = 0, py::arg("size") = py::none(),
           py::arg("fov_x_deg") = py::none())
      .def("__len__", &datasets::SyntheticScene::size)
      .def(
          "__getitem__",
          [](const datasets::SyntheticScene& s, int64_t i) {
            if (i < 0) i += s.size();
            if (i < 0 || i >= s.size()) throw py::index_error("frame " + std::to_string(i) + " of a " + std::to_string(s.size()) + "-frame scene");
            datasets::SyntheticFrame f;
            {
              py::gil_scoped_release release;
              f = s.Render(i);
            }
            PySyntheticFrame out;
            out.frame = WrapFrame(std::move(f.frame));
            out.depth = std::make_shared<const std::vector<float>>(std::move(f.depth));
            out.world_from_cam = f.world_from_cam;
            out.intrinsics = f.intrinsics;
            return out;
          },
          py::arg("index"))
      .def_property_readonly("width", [](const datasets::SyntheticScene& s) { return s.options().width; })
      .def_property_readonly("height", [](const datasets::SyntheticScene& s) { return s.options().height; })
      .def_property_readonly("name", [](const datasets::SyntheticScene& s) { return s.options().Label(); })
      .def("__repr__", [](const datasets::SyntheticScene& s) {
        return "<streamrecon.SyntheticScene " + s.options().Label() + " seed " + std::to_string(s.options().seed) + ", " +
               std::to_string(s.size()) + " frames of " + std::to_string(s.options().width) + "x" + std::to_string(s.options().height) + ">";
      });

  py::class_<PyResult, std::shared_ptr<PyResult>>(m, "Result", "What push() returns for one frame.")
      .def_readonly("depth", &PyResult::depth, "HxW depth.")
      .def_readonly("depth_conf", &PyResult::depth_conf, "HxW depth confidence (1 + exp(c), always > 1).")
      .def_readonly("world_points", &PyResult::world_points, "HxWx3 points in the first camera's frame.")
      .def_readonly("world_points_conf", &PyResult::world_points_conf, "HxW point confidence (with poses=\"tracked\": the depth's, the points being the depth's).")
      .def_readonly("extrinsic", &PyResult::extrinsic, "3x4 cam_from_world [R | t] (OpenCV axes).")
      .def_readonly("intrinsic", &PyResult::intrinsic, "3x3 K in pixels at the model's input size (the known camera when given).")
      .def_readonly("pose_enc", &PyResult::pose_enc, "The 9-number pose encoding: t, quaternion xyzw, fov_h, fov_w.")
      .def_property_readonly("image", [](const PyResult& r) { return ImageArray(r.image); }, "The frame as the model saw it (HxWx3 uint8).")
      .def_property_readonly("index", [](const PyResult& r) { return r.camera.index; })
      .def_property_readonly("timestamp", [](const PyResult& r) { return r.camera.timestamp; })
      .def_property_readonly("name", [](const PyResult& r) { return r.camera.source_name; })
      .def_property_readonly("width", [](const PyResult& r) { return r.camera.width; })
      .def_property_readonly("height", [](const PyResult& r) { return r.camera.height; })
      .def_property_readonly("model_ms", [](const PyResult& r) { return r.camera.model_ms; }, "The C++ step alone (on a GPU, until its work is done), milliseconds.")
      .def_readonly("step_ms", &PyResult::step_ms, "The whole push (input conversion, resize, step, outputs), milliseconds.")
      .def_readonly("cache_bytes", &PyResult::cache_bytes, "Bytes held by the KV caches after this frame.")
      .def("__repr__", [](const PyResult& r) {
        return "<streamrecon.Result frame " + std::to_string(r.camera.index) + " " + std::to_string(r.camera.width) + "x" +
               std::to_string(r.camera.height) + ", " + std::to_string(r.camera.model_ms).substr(0, 6) + " ms>";
      });

  py::class_<Reconstructor>(m, "Reconstructor", R"doc(The streaming engine: push frames, get depth, points and cameras.

Options are the CLI's (`streamrecon run --help`), as keywords with underscores:
  weights      .safetensors or .pth file; None = the shipped default model (recon-small)
  config       built-in config name or JSON file; None = from the weights file
  device       "auto" (CUDA where this build has the CUDA cache and a GPU is visible), "cpu", "cuda[:N]"
  dtype        "float32", "float64" (CPU) or "bfloat16" (matrix work in bf16; CUDA)
  policy       KV-cache pruning: "none", "xstream", "xstream-page", "window", "random"
  format       cache storage: "fp32", "bf16", "kivi4", "kivi2", "oscar4", "oscar2"
  kv_budget    byte budget of all caches: int bytes or a string such as "1GiB"; None = none
  cache_tokens per-layer token capacity; None = from the budget or unbounded
  size         model input: W, "WxH" or (W, H), multiples of the patch size; None = the model's own width
  intrinsics   known camera "fx,fy,cx,cy" (input pixels) or a calibration file
  random_seed  seeded random weights instead of a file (shape-only benchmarks)
  cuda_graphs  CUDA: replay the step's fixed-shape parts (and the full camera head) as CUDA graphs
  bf16_heads   with dtype "bfloat16": the camera and DPT heads in bf16 too (not the reference's fp32 heads)
  output       "numpy" (default) or "torch": what push() returns
  poses        "head" (default): the model's own outputs, the camera head's poses and point maps;
               "tracked" (or "auto": tracked where this build can): each camera measured on the
               depth as `streamrecon run` does by default, the point map rebuilt from the depth
               (a frame whose outputs are not finite then raises Error, as `run` stops there)
Use it as a context manager to release the model at the end of a `with` block.)doc")
      .def(py::init<const std::optional<std::filesystem::path>&, const std::optional<std::filesystem::path>&, const std::string&,
                    const std::string&, const std::string&, const std::string&, py::object, std::optional<int64_t>, int, int, int, bool,
                    bool, uint64_t, py::object, const std::optional<std::filesystem::path>&, std::optional<int64_t>, bool, bool,
                    const std::string&, const std::string&>(),
           py::arg("weights") = py::none(), py::arg("config") = py::none(), py::kw_only(), py::arg("device") = "auto",
           py::arg("dtype") = "float32", py::arg("policy") = "none", py::arg("format") = "fp32", py::arg("kv_budget") = py::none(),
           py::arg("cache_tokens") = py::none(), py::arg("pool") = 16, py::arg("k_group") = 32, py::arg("v_group") = 64,
           py::arg("first_frame_bf16") = false, py::arg("v_hadamard") = false, py::arg("prune_seed") = 0,
           py::arg("size") = py::none(), py::arg("intrinsics") = py::none(), py::arg("random_seed") = py::none(),
           py::arg("cuda_graphs") = false, py::arg("bf16_heads") = false, py::arg("output") = "numpy", py::arg("poses") = "head")
      .def("push", &Reconstructor::Push, py::arg("frame"), py::kw_only(), py::arg("output") = py::none(),
           R"doc(Runs one frame through the model and returns its Result.

frame: an HxWx3 uint8 RGB image (NumPy array or torch tensor, CPU or CUDA), resized to the model's
input size as the CLI does; a Frame from open_frames() or a SyntheticFrame (their names and
timestamps are kept); or a 3xHxW float image in [0, 1] at a multiple of the patch size, which goes
to the model as it is. The first frame fixes the input size until reset().
output: "numpy" or "torch" for this call (default: the Reconstructor's). torch results stay on
the model's device and share its memory (no copy).
The GIL is released during the step.)doc")
      .def("reset", &Reconstructor::Reset, "Forgets the stream: the caches are emptied and the next frame is a first frame.")
      .def("close", &Reconstructor::Close, "Releases the model; later calls raise streamrecon.Error.")
      .def("__enter__", [](Reconstructor& r) -> Reconstructor& { return r; }, py::return_value_policy::reference)
      .def("__exit__", [](Reconstructor& r, py::args) { r.Close(); })
      .def("cache_stats", &Reconstructor::CacheStats,
           "What the KV caches hold now: bytes, max_bytes, budget_bytes, tokens_per_layer, format, policy, effective_bits, ...")
      .def(
          "evaluate",
          [](Reconstructor& self, const std::filesystem::path& dataset, std::optional<int64_t> frames, uint64_t scene_seed, py::object size,
             int every, const std::optional<std::filesystem::path>& out, double min_depth, double max_depth, const std::string& cloud_align,
             bool icp, double icp_threshold, int64_t max_points, int cloud_stride, const std::string& poses) {
            EvalOptions o;
            o.dataset = dataset.string();
            o.frames = frames.value_or(-1);
            o.synthetic_seed = scene_seed;
            o.size = size.is_none() ? self.Size() : SizeOption(size);  // default: this Reconstructor's size
            o.every = every;
            o.min_depth = min_depth;
            o.max_depth = max_depth;
            o.cloud_align = cloud_align;
            o.icp = icp;
            o.icp_max_distance = icp_threshold;
            o.max_points = max_points;
            o.cloud_stride = cloud_stride;
            o.poses = poses;
            return self.Evaluate(o, out);
          },
          py::arg("dataset") = "synthetic", py::kw_only(), py::arg("frames") = py::none(), py::arg("scene_seed") = 0,
          py::arg("size") = py::none(), py::arg("every") = 1, py::arg("out") = py::none(), py::arg("min_depth") = 1e-3,
          py::arg("max_depth") = 0.0, py::arg("cloud_align") = "umeyama", py::arg("icp") = false, py::arg("icp_threshold") = 0.1,
          py::arg("max_points") = 200000, py::arg("cloud_stride") = 1, py::arg("poses") = "auto",
          R"doc(Runs this model over a dataset with ground truth and returns the metrics as a dict.

Exactly `streamrecon eval`: dataset is "synthetic[:walk|:orbit|:pan][:outdoor]" (rendered,
`frames` long, scene `scene_seed`; seeds below 100000 were never used in training) or a TUM
RGB-D / 7-Scenes / RGB-D folder; size defaults to the Reconstructor's. The dict is metrics.json's content: per sequence depth_median,
depth_l1, pose (ATE/RPE after Sim(3), path_length, ate_percent_of_path) and cloud (Acc/Comp/NC),
and their mean. poses: "auto", "tracked" or "head", as `eval --poses`. out: also write
metrics.json, metrics.md and frames_*.csv there. The stream is
reset before and after. Ctrl-C ends it early (KeyboardInterrupt).)doc")
      .def_property_readonly("config", &Reconstructor::Config)
      .def_property_readonly("device", &Reconstructor::Device)
      .def_property_readonly("dtype", &Reconstructor::Dtype)
      .def_property_readonly("weights_path", &Reconstructor::WeightsPath)
      .def_property_readonly("output", &Reconstructor::Output)
      .def_property_readonly("frames_seen", &Reconstructor::FramesSeen)
      .def_property_readonly("input_size", &Reconstructor::InputSize)
      .def_property_readonly("closed", &Reconstructor::closed);

  py::class_<PyCloud>(m, "Cloud", R"doc(The accumulated point cloud, built as `streamrecon run` builds points.ply from the
same cameras (a Reconstructor with poses="tracked" gives `run`'s default ones).

Points with confidence above conf_threshold, every stride-th pixel, from the point map (or from
depth and the predicted camera with points_from_depth), merged per voxel when voxel_size > 0,
kept under max_points by coarsening the grid (0 = no bound).)doc")
      .def(py::init<float, int, double, int64_t, bool>(), py::kw_only(), py::arg("conf_threshold") = 1.5f, py::arg("stride") = 1,
           py::arg("voxel_size") = 0.0, py::arg("max_points") = 2000000, py::arg("points_from_depth") = false)
      .def("add", &PyCloud::Add, py::arg("result"), "Adds a Result's confident points, coloured by its image.")
      .def("clear", &PyCloud::Clear)
      .def("__len__", &PyCloud::size)
      .def_property_readonly("voxel_size", &PyCloud::voxel_size)
      .def("arrays", [](PyCloud& c) { return CloudArrays(c.Collect().first); }, "(points (N, 3) float32, colors (N, 3) uint8)")
      .def("write_ply", [](PyCloud& c, const std::filesystem::path& path) {
        const PointCloud cloud = c.Collect().first;
        py::gil_scoped_release release;
        WritePointCloudPly(path, cloud);
      }, py::arg("path"))
      .def("write_preview", [](PyCloud& c, const std::filesystem::path& path, int width, int height) {
        const auto [cloud, cameras] = c.Collect();
        if (cameras.empty()) throw OptionError("write_preview: the cloud has no frames yet");
        py::gil_scoped_release release;
        WriteCloudPreview(path, cloud, cameras, width, height);
      }, py::arg("path"), py::kw_only(), py::arg("width") = 960, py::arg("height") = 720);

  m.def("write_ply", [](const std::filesystem::path& path, py::handle points, py::handle colors) {
    const PointCloud cloud = CloudFromArrays(points, colors);
    py::gil_scoped_release release;
    WritePointCloudPly(path, cloud);
  }, py::arg("path"), py::arg("points"), py::arg("colors") = py::none(),
        "Writes (N, 3) points with optional (N, 3) uint8 colors as a binary PLY, atomically.");
  m.def("write_tum", [](const std::filesystem::path& path, py::handle results) {
    WriteTrajectoryTum(path, Cameras(ResultList(results)), {});
  }, py::arg("path"), py::arg("results"),
        "Writes the cameras of a sequence of Results as a TUM trajectory (timestamp tx ty tz qx qy qz qw, world_from_cam).");
  m.def("write_cameras_json", [](const std::filesystem::path& path, py::handle results) {
    WriteCamerasJson(path, Cameras(ResultList(results)));
  }, py::arg("path"), py::arg("results"), "Writes cameras.json (intrinsics, pose encoding and both 4x4 matrices per frame).");
  m.def("write_colmap", [](const std::filesystem::path& folder, py::handle results, py::object cloud, bool images) {
    const auto list = ResultList(results);
    PointCloud points;
    if (!cloud.is_none()) {
      if (py::isinstance<PyCloud>(cloud)) points = cloud.cast<PyCloud&>().Collect().first;
      else if (py::isinstance<py::tuple>(cloud) && py::len(cloud) == 2) points = CloudFromArrays(cloud[py::int_(0)], cloud[py::int_(1)]);
      else throw py::type_error("write_colmap: cloud must be a streamrecon.Cloud or a (points, colors) tuple");
    }
    if (images && !CanWriteImages()) throw Error("write_colmap: this build cannot write images (built without OpenCV); pass images=False");
    py::gil_scoped_release release;
    if (images)
      for (const auto& r : list) WriteColmapImage(folder, r->Prediction());
    return WriteColmapSparse(folder, Cameras(list), points);
  }, py::arg("folder"), py::arg("results"), py::arg("cloud") = py::none(), py::kw_only(), py::arg("images") = true,
        "Writes a COLMAP text model into folder (images/frame_NNNNNN.png, sparse/0/*.txt) with an optional cloud (a Cloud or "
        "(points, colors)); returns the indices of frames left out (non-finite focal lengths).");
  m.def("write_transforms_json", [](const std::filesystem::path& path, py::handle results, const std::string& image_dir) {
    return WriteTransformsJson(path, Cameras(ResultList(results)), image_dir);
  }, py::arg("path"), py::arg("results"), py::kw_only(), py::arg("image_dir") = "images",
        "Writes nerfstudio's transforms.json for the Results; returns the indices of frames left out.");

  m.def("load_safetensors", [](const std::filesystem::path& path, bool with_metadata) -> py::object {
    models::SafetensorsFile file;
    {
      py::gil_scoped_release release;
      file = models::ReadSafetensors(path);
    }
    py::dict arrays;
    for (const auto& [name, tensor] : file.tensors) arrays[py::str(name)] = ToNumpy(tensor);
    if (!with_metadata) return std::move(arrays);
    return py::make_tuple(arrays, file.metadata);
  }, py::arg("path"), py::kw_only(), py::arg("with_metadata") = false,
        "Reads a .safetensors file into a dict of NumPy arrays (bf16/fp16 as float32); with_metadata: (arrays, metadata).");

  m.def("can_read_images", &datasets::HaveOpenCv, "Whether this build decodes images and videos (it has OpenCV).");
  m.def("can_track", &PoseTracker::Available, "Whether this build tracks cameras on the depth (poses=\"tracked\"; OpenCV 4.4+).");
  m.def("can_write_ply", &CanWritePly, "Whether this build writes PLY files (it has Open3D).");
  m.def("can_write_images", &CanWriteImages, "Whether this build writes PNG images (it has OpenCV): write_colmap's images.");
  m.def("default_weights", &models::DefaultWeightsPath, "The shipped default model's file (used when weights=None).");
  m.def("cuda_available", [] { return CudaKvAvailable(); },
        "Whether this build has the CUDA cache kernels and a GPU is visible (what device='auto' picks).");
  m.def("set_log_level", [](const std::string& level) {
    const auto l = spdlog::level::from_str(level);
    if (l == spdlog::level::off && level != "off")
      throw OptionError("set_log_level: expected trace, debug, info, warning, error, critical or off, got '" + level + "'");
    spdlog::set_level(l);
  }, py::arg("level"), "The engine's log level (default: warning); \"info\" shows the CLI's progress lines.");
  m.attr("__version__") = STREAMRECON_VERSION;
}

}  // namespace streamrecon::app

PYBIND11_MODULE(_core, m) {
  spdlog::set_pattern("[streamrecon %H:%M:%S] %v");
  spdlog::set_level(spdlog::level::warn);  // a library is quiet; set_log_level("info") shows progress
  streamrecon::app::DefineModule(m);
}
