// The model: DINO patch embed, alternating frame/global attention with 2D RoPE, camera head with
// its own trunk cache, and the two DPT heads. Numerics follow the reference (see spec/model.md):
// the positional-table resize and RoPE angles are computed in fp32 as the reference does.
// Building blocks: layers.h; the step: model_impl.h; CUDA graphs: cuda_graphs.cc.
#include "models/streaming_model.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/model_impl.h"

namespace streamrecon::models {

void ModelOptions::Check() const {
  if (dtype != "float32" && dtype != "float64" && dtype != "bfloat16")
    throw OptionError("unsupported dtype '" + dtype + "': expected float32, float64 or bfloat16 (bf16 matrix work, fp32 norms/residual/heads)");
  if (device != "cpu" && device.rfind("cuda", 0) != 0) throw OptionError("unsupported device '" + device + "': expected cpu or cuda[:N]");
  if (cuda_graphs && device == "cpu") throw OptionError("CUDA graphs need --device cuda");
  if (bf16_heads && dtype != "bfloat16") throw OptionError("--bf16-heads needs --dtype bfloat16 (got " + dtype + ")");
  if (fp8_gemms && !FusedBlocks())
    throw OptionError("--fp8-gemms needs --dtype bfloat16 on --device cuda with the fused kernels (got " + dtype + " on " + device +
                      (fused_kernels ? "" : ", --no-fused-kernels") + ")");
  if (trainable && dtype == "bfloat16")
    throw OptionError("a trainable model keeps float32 (or float64) weights; bf16 matrix work in training comes from autocast");
  cache.Check();
  if (device != "cpu" && !CudaKvAvailable())
    throw OptionError("--device " + device +
                      ": no CUDA device is visible, or this build has no CUDA KV-cache kernels (configure with STREAMRECON_TORCH_CUDA=ON on a CUDA machine)");
}

namespace {

// FP8 products with row-wise scales need an sm_89+ GPU and a LibTorch built with those kernels:
// one tiny product at load turns a missing one into a clear error instead of a failure mid-stream.
void CheckFp8Gemms(const c10::Device& device) {
  try {
    const at::Tensor a = at::ones({16, 16}, at::TensorOptions().device(device)).to(at::kFloat8_e4m3fn);
    const at::Tensor s = at::ones({16, 1}, at::TensorOptions().device(device));
    at::_scaled_mm(a, a.t(), s, s.t(), at::zeros({16}, at::TensorOptions().device(device).dtype(at::kBFloat16)), {}, at::kBFloat16);
  } catch (const std::exception& e) {
    throw OptionError(std::string("--fp8-gemms: this GPU or LibTorch cannot run FP8 matrix products with row-wise scales and a bias "
                                  "(they need an sm_89 or newer GPU and a LibTorch built with those kernels): ") +
                      e.what());
  }
}

using BlockGroups = std::vector<std::pair<const char*, const std::vector<layers::BlockWeights>*>>;

// Which blocks took FP8 weights (layers::Fp8Eligible): said once at load; none is an error.
void ReportFp8Blocks(const BlockGroups& groups) {
  std::string parts;
  int fp8 = 0, total = 0;
  for (const auto& [name, blocks] : groups) {
    const auto n = std::count_if(blocks->begin(), blocks->end(), [](const layers::BlockWeights& b) { return b.qkv8.defined(); });
    parts += std::string(parts.empty() ? "" : ", ") + name + " " + std::to_string(n) + "/" + std::to_string(blocks->size());
    fp8 += static_cast<int>(n);
    total += static_cast<int>(blocks->size());
  }
  if (fp8 == 0)
    throw OptionError("--fp8-gemms: none of the model's " + std::to_string(total) +
                      " blocks can take FP8 products (bf16 blocks with head dim 64, widths multiples of 16, MLP width at most 4096): " + parts);
  spdlog::info("--fp8-gemms: FP8 matrix products in {} of {} blocks ({}); the others stay bf16", fp8, total, parts);
}

}  // namespace

StreamingModel::StreamingModel(const ModelConfig& config, const StateDict& weights, const ModelOptions& options)
    : impl_(std::make_unique<Impl>()) {
  config.Check();
  options.Check();
  options.cache.Check(config.head_dim());
  CheckStateDict(weights, config, "weights");
  auto& m = *impl_;
  m.config = config;
  m.options = options;
  m.options.cache.measure = options.stage_timing;
  m.topts = at::TensorOptions().dtype(options.dtype == "float64" ? at::kDouble : at::kFloat).device(options.device);
  // On the GPU the dense cache of a bfloat16 model is the CUDA kernels' bf16 cache. A float32 or
  // float64 model keeps --format fp32 in its own dtype (the reference cache on device tensors; its
  // pruning reads scores back, so it is the slower path), so that the format means full precision
  // on every device; --format bf16 selects the kernels.
  const bool cuda = m.topts.device().is_cuda();
  if (cuda && m.options.cache.format == CacheFormat::kDense && options.dtype == "bfloat16") m.options.cache.format = CacheFormat::kBf16;
  // float32 means float32 on the GPU too: cuDNN's convolutions (the DPT heads) would otherwise run
  // in TF32 (LibTorch's default), ~1e-3 off. Process-wide, as LibTorch keeps it.
  if (cuda && options.dtype != "bfloat16") at::globalContext().setAllowTF32CuDNN(false);
  // bfloat16: the aggregator's matrix weights (linear layers, patch conv) in bf16; norms, residual
  // stream, tokens and both heads stay fp32, like the reference's autocast. With bf16_heads also
  // the camera head's linear layers and every DPT convolution (not the heads' LayerNorms).
  auto ends_with = [](const std::string& name, const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  auto is_linear = [&](const std::string& name) {
    for (const char* suffix : {".qkv.weight", ".qkv.bias", ".proj.weight", ".proj.bias", ".fc1.weight", ".fc1.bias", ".fc2.weight", ".fc2.bias"})
      if (ends_with(name, suffix)) return true;
    return false;
  };
  auto is_matrix = [&](const std::string& name) {
    if (name.rfind("aggregator.", 0) == 0) return is_linear(name);
    if (!options.bf16_heads) return false;
    if (name.rfind("camera_head.", 0) == 0)
      return is_linear(name) || name.rfind("camera_head.embed_pose.", 0) == 0 || name.rfind("camera_head.poseLN_modulation.", 0) == 0;
    for (const char* head : {"depth_head.", "point_head."})
      if (name.rfind(head, 0) == 0) return name.rfind(std::string(head) + "norm.", 0) != 0;
    return false;
  };
  for (const auto& [name, t] : weights) {
    if (IsIgnoredParameter(name)) continue;
    const bool bf16 = options.dtype == "bfloat16" && is_matrix(name);
    Tensor converted = t.to(bf16 ? m.topts.dtype(at::kBFloat16) : m.topts).contiguous();
    // With bf16 heads the DPT convolutions run channels-last (cuDNN's NHWC kernels on CUDA; the
    // same layout on the CPU, so that the CPU tests cover that path).
    if (bf16 && converted.dim() == 4 && name.rfind("aggregator.", 0) != 0) converted = converted.contiguous(at::MemoryFormat::ChannelsLast);
    // Trainable: a copy of its own (never the caller's storage), a leaf that collects gradients.
    if (options.trainable) converted = converted.clone().detach().requires_grad_(true);
    m.w.emplace(name, converted);
  }

  if (options.fp8_gemms) CheckFp8Gemms(m.topts.device());
  for (int i = 0; i < config.dino.depth; ++i)
    m.dino_blocks.push_back(m.LoadBlock("aggregator.patch_embed.blocks." + std::to_string(i) + ".", config.dino.num_heads, 1e-6, false));
  for (int i = 0; i < config.depth; ++i) {
    m.frame_blocks.push_back(m.LoadBlock("aggregator.frame_blocks." + std::to_string(i) + ".", config.num_heads, 1e-5, true));
    m.global_blocks.push_back(m.LoadBlock("aggregator.global_blocks." + std::to_string(i) + ".", config.num_heads, 1e-5, true));
  }
  for (int i = 0; i < config.camera_head.trunk_depth; ++i)
    m.trunk_blocks.push_back(m.LoadBlock("camera_head.trunk." + std::to_string(i) + ".", config.camera_head.num_heads, 1e-5, false));
  if (options.fp8_gemms)
    ReportFp8Blocks({{"patch embed", &m.dino_blocks}, {"frame", &m.frame_blocks}, {"global", &m.global_blocks}, {"camera trunk", &m.trunk_blocks}});
  for (auto* t : {&m.frame_out, &m.q, &m.k, &m.v, &m.attn, &m.outputs}) t->resize(config.depth);
  m.needed.assign(config.depth, false);
  for (int idx : config.dpt.intermediate_layer_idx) m.needed.at(idx) = true;
  m.needed[config.depth - 1] = true;
  m.depth_head = m.LoadDpt("depth_head.");
  m.point_head = m.LoadDpt("point_head.");
  m.ResetCaches();
}

StreamingModel::~StreamingModel() = default;

StepOutput StreamingModel::Step(const at::Tensor& image, bool defer_pose) { return impl_->Step(image, defer_pose); }

std::shared_ptr<c10::Event> RecordOnCurrentStream(c10::Device device) {
  if (!device.is_cuda()) return nullptr;
  auto event = std::make_shared<c10::Event>(device.type());
  event->record(c10::impl::getDeviceGuardImpl(device.type())->getStream(device));
  return event;
}

PoseCopy StartPoseCopy(const StepOutput& out) {
  PoseCopy copy;
  if (!out.pose_enc.is_cuda()) {
    copy.host = out.pose_enc;
    return copy;
  }
  const c10::Device device = out.pose_enc.device();
  std::optional<c10::StreamGuard> beside;
  if (out.pose_ready) {
    const c10::Stream stream = c10::impl::getDeviceGuardImpl(device.type())->getStreamFromGlobalPool(device);
    out.pose_ready->block(stream);
    out.pose_enc.record_stream(stream);
    beside.emplace(stream);
  }
  copy.host = at::empty(out.pose_enc.sizes(), out.pose_enc.options().device(at::kCPU).pinned_memory(true));
  copy.host.copy_(out.pose_enc, /*non_blocking=*/true);
  copy.ready = RecordOnCurrentStream(device);
  return copy;
}

void StepOutput::JoinPose() const {
  if (!pose_ready) return;
  const c10::Device device = pose_enc.device();
  pose_ready->block(c10::impl::getDeviceGuardImpl(device.type())->getStream(device));
}

SequenceOutput StreamingModel::ForwardSequence(const at::Tensor& images) { return impl_->ForwardSequence(images); }

StateDict StreamingModel::Parameters() const { return impl_->w; }

void StreamingModel::Reset() {
  impl_->graphs.reset();
  impl_->ResetCaches();
}

int64_t StreamingModel::frames_seen() const { return impl_->frames; }

int64_t StreamingModel::CachedTokens(int layer) const { return impl_->global_caches.at(layer)->tokens(); }

std::pair<at::Tensor, at::Tensor> StreamingModel::CachedKv(int layer) const { return impl_->global_caches.at(layer)->Materialize(); }

int64_t StreamingModel::CacheBytes() const { return impl_->Bytes(); }

const StageTimings& StreamingModel::LastTimings() const { return impl_->timings; }

CacheReport StreamingModel::Cache() const {
  const auto& m = *impl_;
  CacheReport r;
  r.format = ToString(m.options.cache.format);
  r.policy = ToString(m.options.cache.policy);
  r.budget_bytes = m.options.cache.budget_bytes;
  r.bytes = m.Bytes();
  r.max_bytes = m.max_bytes;
  int64_t tokens = 0;
  for (const auto& c : m.global_caches) {
    r.global_bytes += c->bytes();
    r.tokens_per_layer.push_back(c->tokens());
    r.layer_stats.push_back(c->quant_stats());
    tokens += c->tokens();
  }
  for (const auto& c : m.trunk_caches) r.trunk_tokens += c->tokens();
  r.effective_bits = EffectiveBits(r.global_bytes, tokens, m.config.num_heads, m.config.head_dim());
  r.plan = m.plan;
  return r;
}

void StreamingModel::ForgetCertainRowsForTesting() {
  for (auto& c : impl_->global_caches) c->SetCertainRowsForTesting(std::numeric_limits<int64_t>::max());
}

StreamingModel::CacheCounts StreamingModel::CacheBeforeLastStep() const {
  const auto& m = *impl_;
  CacheCounts counts;
  counts.bytes = m.bytes_before_step;
  counts.budget_bytes = m.options.cache.budget_bytes;
  for (const auto& c : m.global_caches) counts.tokens_per_layer.push_back(c->tokens_before_last_frame());
  return counts;
}

const ModelConfig& StreamingModel::config() const { return impl_->config; }

std::string DefaultWeightsPath() {
  if (const char* env = std::getenv("STREAMRECON_DEFAULT_WEIGHTS"); env && *env) return env;
  return STREAMRECON_DEFAULT_WEIGHTS;
}

LoadedModel LoadModelWeights(const std::string& weights_path_in, const std::string& config_name, int64_t random_seed,
                             bool allow_default) {
  LoadedModel m;
  if (random_seed >= 0 && !weights_path_in.empty())
    throw OptionError("--weights " + weights_path_in + " and --random-weights exclude each other: give one of them");
  std::string weights_path = weights_path_in;
  if (weights_path.empty() && random_seed < 0 && allow_default) {
    weights_path = DefaultWeightsPath();
    if (!std::filesystem::exists(weights_path))
      throw OptionError("the default model " + weights_path + " is missing (it ships with the source tree; set STREAMRECON_DEFAULT_WEIGHTS or pass --weights FILE)");
    m.notes.push_back("no --weights: using the shipped default model " + weights_path +
                      " (recon-small, trained on synthetic scenes; see docs/training.md)");
  }
  m.weights_path = weights_path;
  if (random_seed >= 0) {
    m.config = LoadConfig(config_name.empty() ? "demo-small" : config_name);
    m.weights = RandomWeights(m.config, static_cast<uint64_t>(random_seed));
    m.notes.push_back("using seeded random weights (seed " + std::to_string(random_seed) + "): outputs are not a real reconstruction");
    return m;
  }
  if (weights_path.empty()) throw OptionError("no weights given: pass --weights FILE (or --random-weights for a demo)");
  if (!config_name.empty()) {
    m.config = LoadConfig(config_name);
  } else if (auto from_file = ConfigFromWeightsFile(weights_path)) {
    m.config = *from_file;
    m.notes.push_back("model config read from the safetensors header of " + weights_path);
  } else {
    m.config = NamedConfig("streamvggt-1b");
    m.notes.push_back("no config in " + weights_path + " and no --config: assuming streamvggt-1b");
  }
  m.weights = LoadStateDict(weights_path, &m.notes);
  CheckStateDict(m.weights, m.config, weights_path);
  // Non-finite weights would only show as NaN depth maps and an empty cloud frames later.
  for (const auto& [name, t] : m.weights) {
    if (!t.is_floating_point() || IsIgnoredParameter(name)) continue;
    const int64_t bad = t.numel() - at::isfinite(t).sum().item<int64_t>();
    if (bad > 0)
      throw WeightsError(weights_path + ": tensor '" + name + "' holds " + std::to_string(bad) + " non-finite value(s) (NaN or inf) of " +
                         std::to_string(t.numel()) + "; the file is damaged or was saved from a diverged run");
  }
  return m;
}

FramePrediction ToFramePrediction(const StepOutput& out, const RgbImage& image, int64_t index) {
  FramePrediction p;
  p.index = index;
  p.height = static_cast<int>(out.depth.size(0));
  p.width = static_cast<int>(out.depth.size(1));
  out.JoinPose();
  const Tensor pose = out.pose_enc.to(at::kCPU, at::kDouble).contiguous();
  std::copy(pose.data_ptr<double>(), pose.data_ptr<double>() + 9, p.pose_enc.begin());
  auto to_vec = [](const Tensor& t) {
    const Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  };
  p.depth = to_vec(out.depth);
  p.depth_conf = to_vec(out.depth_conf);
  p.world_points = to_vec(out.world_points);
  p.world_points_conf = to_vec(out.world_points_conf);
  // A non-finite output stops the stream at this frame instead of exporting NaN maps and poses
  // (checked on the host copies, so the device gets no extra work or synchronisation).
  auto finite = [](const auto& values) { return std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); }); };
  for (const auto& [what, ok] : {std::pair<const char*, bool>{"pose", finite(p.pose_enc)}, {"depth", finite(p.depth)},
                                 {"world points", finite(p.world_points)}})
    if (!ok)
      throw Error("frame " + std::to_string(index) + ": the model's " + what +
                  " output is not finite (NaN or inf); the weights or this input frame are broken");
  p.image = image;
  return p;
}

at::Tensor ImageToTensor(const RgbImage& image) {
  if (image.empty()) throw Error("empty image");
  const Tensor hwc = at::from_blob(const_cast<uint8_t*>(image.data.data()), {image.height, image.width, 3}, at::kByte);
  return hwc.permute({2, 0, 1}).to(at::kFloat).div(255.0f).contiguous();
}

}  // namespace streamrecon::models
