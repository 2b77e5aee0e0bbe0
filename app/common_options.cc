// Shared CLI options for the model and the KV cache.
#include "app/common_options.h"

#include <mutex>
#include <regex>

#include "app/stream_setup.h"

#include <spdlog/spdlog.h>

#include "core/byte_size.h"
#include "core/errors.h"
#include "core/file_hash.h"
#include "core/pose_tracker.h"
#include "datasets/frame_source.h"
#include "datasets/preprocess.h"
#include "datasets/synthetic.h"

namespace streamrecon::app {

namespace {
CLI::Validator NumberCheck(bool allow_zero) {
  return CLI::Validator(
      [allow_zero](std::string& text) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != text.size() || text.empty()) return "expected a number, got '" + text + "'";
        if (allow_zero ? v < 0 : v <= 0) return std::string(allow_zero ? "must be >= 0" : "must be positive") + ", got " + text;
        return {};
      },
      allow_zero ? "NONNEGATIVE" : "POSITIVE");
}
}  // namespace

const CLI::Validator kPositive = NumberCheck(false);
const CLI::Validator kNonNegative = NumberCheck(true);

void ModelArgs::Add(CLI::App& app) {
  app.add_option("--weights,-w", weights, "Weights file: .safetensors or .pth (flat or {\"model\": ...}); default: the shipped recon-small model");
  app.add_option("--config", config,
                 "Model config: streamvggt-1b, recon-small, parity-tiny, demo-small or a JSON file (default: from the weights file; demo-small with --random-weights)");
  app.add_flag_function(
      "--random-weights", [this](int64_t) { if (random_seed < 0) random_seed = 0; },
      "Use seeded random weights instead of a file (demos and benchmarks; not a real reconstruction)");
  app.add_option("--seed", random_seed, "Seed for --random-weights")->check(kNonNegative);
  app.add_option("--dtype", dtype, "Compute precision: float32, float64, or bfloat16 (bf16 matrix work, fp32 norms and heads)")
      ->check(CLI::IsMember({"float32", "float64", "bfloat16"}));
  app.add_option("--device", device, "auto, cpu or cuda[:N] (auto: the GPU where this build has the CUDA cache and one is visible)")
      ->capture_default_str();
  app.add_flag("--cuda-graphs", cuda_graphs,
               "CUDA: replay the fixed-shape parts of each step (patch embed, blocks, DPT heads) as CUDA graphs from the third frame on, "
               "the camera head once its trunk caches are full, and the whole step with its cache attentions once dense caches "
               "are full and evicting on the device");
  app.add_flag("--bf16-heads", bf16_heads,
               "With --dtype bfloat16: run the camera and DPT heads in bf16 too (channels-last on CUDA); faster, but not the "
               "reference's fp32 heads (docs/perf.md reports the deviation)");
  app.add_flag("--no-fused-kernels", no_fused_kernels,
               "With --dtype bfloat16 on CUDA: run the glue around the blocks' matrix work (LayerNorm, residual, qkv split, qk-norm, "
               "RoPE) as separate ATen ops instead of the fused kernels (same arithmetic; for comparisons)");
  app.add_flag("--exact-gelu", exact_gelu,
               "With --dtype bfloat16 on CUDA: the MLP's GELU in the reference's erf form as its own kernel, instead of the "
               "tanh form in the fc1 product's epilogue (the default: one pass less over the hidden rows; the two forms differ "
               "by at most 4.8e-4 absolute, docs/perf.md reports the deviation)");
  app.add_flag("--fp8-gemms", fp8_gemms,
               "With --dtype bfloat16 on CUDA: the blocks' matrix products (qkv, projection, MLP) from FP8 e4m3 operands "
               "(per-channel weight and per-token activation scales; an sm_89+ GPU); not the reference's bf16 products "
               "(docs/perf.md reports the deviation and the time)");
}

models::ModelOptions ModelArgs::ToOptions() const {
  models::ModelOptions options;
  options.dtype = dtype;
  options.device = Device();
  options.cuda_graphs = cuda_graphs;
  options.bf16_heads = bf16_heads;
  options.fused_kernels = !no_fused_kernels;
  options.gelu_epilogue = !exact_gelu;
  options.fp8_gemms = fp8_gemms;
  return options;
}

nlohmann::json ModelArgs::ToJson() const {
  const models::ModelOptions o = ToOptions();
  return {{"dtype", o.dtype},
          {"device", o.device},
          {"cuda_graphs", o.cuda_graphs},
          {"bf16_heads", o.bf16_heads},
          {"fused_kernels", o.FusedBlocks()},
          {"gelu", o.GeluInEpilogue() ? "tanh, in the fc1 product's epilogue" : "erf"},
          {"fp8_gemms", o.fp8_gemms}};
}

nlohmann::json CacheArgs::KernelJson() const {
  return {{"attention_path", attention_path},
          {"sdpa_backend", sdpa_backend},
          {"query_tail", query_tail},
          {"query_tail_splits", query_tail_splits},
          {"attention_chunk_tokens", attention_chunk_tokens},
          {"append_kernel", append_kernel},
          {"append_heads_per_block", append_heads_per_block},
          {"fused_min_blocks", fused_min_blocks},
          {"serial_maintenance", serial_maintenance}};
}

void CacheArgs::Add(CLI::App& app, bool with_axes) {
  if (with_axes) {
    app.add_option("--policy,--prune", policy, "KV-cache pruning: " + PrunePolicyNames())->capture_default_str();
    app.add_option("--format", format, "KV-cache storage: " + CacheFormatNames() + " (fp32: the model's dtype)")
        ->capture_default_str();
    app.add_option("--kv-budget", budget, "Byte budget of all KV caches, e.g. 2GB, 512MiB, 1048576 (needs a --policy)");
  }
  app.add_option("--cache-tokens", cache_tokens, "Token capacity of each global layer's cache (XStreamVGGT's cap)");
  app.add_option("--pool", pool, "XStreamVGGT query pool size")->capture_default_str();
  app.add_option("--k-group", k_group, "Tokens per page (tokens sharing a per-channel K scale)")->capture_default_str();
  app.add_option("--v-group", v_group, "Channels sharing a per-token V scale (divides the head dim)")->capture_default_str();
  app.add_flag("--first-frame-bf16", first_frame_bf16, "Quantized formats: keep the first frame in bf16");
  app.add_flag("--v-hadamard", v_hadamard, "OScaR: rotate values by the Hadamard matrix too");
  app.add_option("--prune-seed", prune_seed, "Seed of the random policy");
  const std::string kernels = "CUDA kernels (experiments)";
  app.add_option("--attention-path", attention_path,
                 "CUDA attention over the cache: auto (dequant-ragged for pages, where it serves them; else "
                 "dequant-bucketed), fused, dequant, dequant-bucketed, dequant-ragged or int8 (INT8 Q K^T, bf16 P V: less "
                 "precise, and slower than the default on the H200; docs/perf.md)")
      ->group(kernels)
      ->capture_default_str();
  app.add_option("--sdpa-backend", sdpa_backend, "Torch attention of the dequant paths: auto, flash, cudnn or efficient")
      ->group(kernels)
      ->capture_default_str();
  app.add_option("--attention-chunk-tokens", attention_chunk_tokens, "Dequant paths: tokens per chunk (>= 1024; 0: 131072)")
      ->group(kernels);
  app.add_option("--append-kernel", append_kernel, "Page append kernel: 1 or 2 (0: 2, the cp.async one)")->group(kernels);
  app.add_option("--append-heads-per-block", append_heads_per_block, "Append kernel 2: heads per block, 1, 2 or 4 (0: automatic)")
      ->group(kernels);
  app.add_option("--fused-min-blocks", fused_min_blocks, "Fused attention over pages: blocks per multiprocessor, 1 or 2")
      ->group(kernels)
      ->capture_default_str();
  app.add_option("--query-tail", query_tail,
                 "Paged caches on the H200: the 17 query rows past cuDNN's last whole 128-row tile, by flash attention "
                 "over the expanded bf16 rows on a second stream beside cuDNN's call, after the rows past cuDNN's span "
                 "(flash-beside-rest, the fastest), beside it with those rows after it (flash-beside), after it "
                 "(flash, before session 23), or by our kernel over the packed pages after cuDNN's call (pages) or "
                 "before it (pages-first; both slower: docs/perf.md, calls 142-143)")
      ->group(kernels)
      ->capture_default_str();
  app.add_option("--query-tail-splits", query_tail_splits,
                 "--query-tail pages or pages-first: that kernel's splits over the keys (0: automatic; the flash "
                 "placements ignore it)")
      ->group(kernels)
      ->capture_default_str();
  app.add_flag("--serial-maintenance", serial_maintenance,
               "Prune and store each layer's cache on the main CUDA stream right after its attention, instead of on a "
               "second stream beside the next layers (for comparisons)")
      ->group(kernels);
}

KvCacheOptions CacheArgs::ForConfiguration(const std::string& policy_name, const std::string& format_name,
                                           const std::string& budget_text) const {
  CacheArgs c = *this;
  c.policy = policy_name;
  c.format = format_name;
  c.budget = budget_text;
  if (ParsePrunePolicy(policy_name) == PrunePolicy::kNone) c.budget.clear(), c.cache_tokens = 0;
  return c.ToOptions();
}

std::string WithFlagNames(const std::string& message) {
  static const std::pair<const char*, const char*> kFlags[] = {
      {"cache_tokens", "--cache-tokens"},   {"budget_bytes", "--kv-budget"},
      {"pool_size", "--pool"},              {"k_group", "--k-group"},
      {"v_group", "--v-group"},             {"first_frame_bf16", "--first-frame-bf16"},
      {"v_hadamard", "--v-hadamard"},       {"attention_chunk_tokens", "--attention-chunk-tokens"},
      {"append_variant", "--append-kernel"}, {"append_heads_per_block", "--append-heads-per-block"},
      {"fused_min_blocks", "--fused-min-blocks"},
      {"query_tail_splits", "--query-tail-splits"},
  };
  std::string out = message;
  for (const auto& [field, flag] : kFlags) out = std::regex_replace(out, std::regex(std::string("\\b") + field + "\\b"), flag);
  return out;
}

std::string ModelArgs::Device() const {
  if (device != "auto") return device;
  return CudaKvAvailable() ? "cuda" : "cpu";
}

KvCacheOptions CacheArgs::ToOptions() const {
  KvCacheOptions o;
  o.policy = ParsePrunePolicy(policy);
  o.format = ParseCacheFormat(format);
  o.budget_bytes = budget.empty() ? 0 : ParseByteSize(budget);
  o.cache_tokens = cache_tokens;
  o.pool_size = pool;
  o.k_group = k_group;
  o.v_group = v_group;
  o.first_frame_bf16 = first_frame_bf16;
  o.v_hadamard = v_hadamard;
  o.seed = prune_seed;
  o.kernels.attention = ParseAttentionPath(attention_path);
  o.kernels.sdpa = ParseSdpaBackend(sdpa_backend);
  o.kernels.attention_chunk_tokens = attention_chunk_tokens;
  o.kernels.append_variant = append_kernel;
  o.kernels.append_heads_per_block = append_heads_per_block;
  o.kernels.fused_min_blocks = fused_min_blocks;
  o.kernels.query_tail = ParseQueryTail(query_tail);
  o.kernels.query_tail_splits = query_tail_splits;
  o.kernels.background_maintenance = !serial_maintenance;
  o.Check();
  return o;
}

void AddPosesOption(CLI::App& app, std::string& poses) {
  app.add_option("--poses", poses,
                 "Camera poses: tracked (the camera head's motion checked and corrected by SIFT matches and a PnP on the predicted "
                 "depth, on the CPU beside the model; the point maps become the depth unprojected with those cameras), head (the camera head's "
                 "poses as predicted; they drift over long streams) or auto (tracked where this build has OpenCV)")
      ->check(CLI::IsMember({"auto", "tracked", "head"}))
      ->capture_default_str();
}

bool ResolvePoses(const std::string& poses) {
  if (poses == "head") return false;
  if (poses == "tracked" || poses == "auto") {
    if (PoseTracker::Available()) return true;
    if (poses == "tracked") throw OptionError("--poses tracked: this build has no pose tracker (it needs OpenCV 4.4+ with features2d and calib3d); use --poses head");
    static std::once_flag noted;
    std::call_once(noted, [] { spdlog::info("poses: the camera head's (this build has no pose tracker: it needs OpenCV 4.4+ with features2d and calib3d)"); });
    return false;
  }
  throw OptionError("--poses: expected auto, tracked or head, found '" + poses + "'");
}

void InputArgs::Add(CLI::App& app) {
  app.add_option("--input,-i", input, "Image folder, glob (quoted), video file, or camera:N");
  app.add_option("--synthetic", synthetic_frames, "Render N synthetic frames instead of --input")->check(kPositive);
  app.add_option("--scene", scene, "Synthetic scene: walk, orbit or pan, optionally with :outdoor (an open square instead of a room)")
      ->capture_default_str();
  app.add_option("--size", size, "Model input size: W (height keeps the aspect) or WxH, multiples of 14 (default: the model's training width, 224 for the default model, 518 for streamvggt-1b)");
  app.add_option("--max-frames", max_frames, "Stop after this many frames")->check(kNonNegative);
  app.add_option("--every", every, "Use every K-th frame of the input")->check(kPositive);
  app.add_option("--intrinsics", intrinsics,
                 "Known camera: fx,fy,cx,cy in pixels at the input's resolution, or a calibration file (COLMAP cameras.txt, OpenCV "
                 ".yaml/.xml); the depth is unprojected with it and every export carries it (the predicted one stays in cameras.json)");
  app.add_flag("--strict", strict, "Stop at a damaged frame (undecodable or cut-short image, video shorter than announced) instead of skipping it with a warning");
}

LoadedFrames LoadFrames(const InputArgs& args, int patch_size, int default_width) {
  if (args.input.empty() == (args.synthetic_frames <= 0)) throw OptionError("give exactly one of --input PATH or --synthetic N");
  const datasets::PreprocessOptions pre = ParseSize(args.size, patch_size, default_width);
  const int synthetic = args.max_frames >= 0 && args.synthetic_frames > 0
                            ? static_cast<int>(std::min<int64_t>(args.synthetic_frames, args.max_frames))
                            : args.synthetic_frames;
  std::unique_ptr<datasets::FrameSource> source = OpenInput(args.input, synthetic, args.scene, pre, args.every, args.max_frames, args.strict);
  LoadedFrames out;
  out.description = source->Describe();
  int w = 0, h = 0;
  while (auto frame = source->Next()) {
    if (w == 0) std::tie(w, h) = datasets::ModelInputSize(frame->image.width, frame->image.height, pre);
    datasets::PreprocessOptions fixed = pre;
    fixed.target_width = w;
    fixed.target_height = h;
    out.images.push_back(datasets::ResizeForModel(frame->image, fixed));
    out.tensors.push_back(models::ImageToTensor(out.images.back()));
  }
  if (out.tensors.empty()) throw Error("no frames were read from " + out.description);
  return out;
}

OpenedModel OpenModel(const ModelArgs& model, const CacheArgs* cache, bool allow_default) {
  models::ModelOptions options = model.ToOptions();
  if (cache) options.cache = cache->ToOptions();
  OpenedModel opened;
  opened.loaded = LoadWeights(model, allow_default);
  opened.model = std::make_shared<models::StreamingModel>(opened.loaded.config, opened.loaded.weights, options);
  opened.loaded.weights.clear();
  return opened;
}

models::LoadedModel LoadWeights(const ModelArgs& model, bool allow_default) {
  models::LoadedModel loaded = models::LoadModelWeights(model.weights, model.config, model.random_seed, allow_default);
  for (const auto& note : loaded.notes) spdlog::info("{}", note);
  return loaded;
}

WeightsRecord::WeightsRecord(const models::LoadedModel& loaded, int64_t random_seed)
    : path_(loaded.weights_path), random_seed_(random_seed) {
  if (!path_.empty()) sha256_ = std::async(std::launch::async, [path = path_] { return Sha256OfFile(path); });
}

nlohmann::json WeightsRecord::Get() {
  if (path_.empty()) return {{"random_seed", random_seed_}};
  nlohmann::json record = {{"path", std::filesystem::absolute(path_).string()}};
  try {
    record["sha256"] = sha256_.get();
  } catch (const std::exception& e) {
    record["sha256"] = nullptr;
    record["sha256_error"] = e.what();
  }
  return record;
}

}  // namespace streamrecon::app
