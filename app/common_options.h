// Options shared by several subcommands: the model (weights / random weights / config, dtype,
// device) and the KV cache (policy, token capacity, pool size, budget).
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "models/streaming_model.h"

namespace streamrecon::app {

// Number checks for CLI options with one-line messages ("--every: must be positive, got 0"),
// instead of CLI11's range text.
extern const CLI::Validator kPositive;     // > 0
extern const CLI::Validator kNonNegative;  // >= 0

struct ModelArgs {
  std::string weights;           // weights file (.safetensors or .pth)
  std::string config;            // built-in config name or JSON file; empty = from the weights file
  int64_t random_seed = -1;      // >= 0: seeded random weights instead of a file
  std::string dtype = "float32"; // float32 | float64
  std::string device = "auto";   // auto | cpu | cuda[:N]; auto = cuda where this build has the CUDA cache and a GPU is visible
  bool cuda_graphs = false;      // replay the fixed-shape parts of the step as CUDA graphs
  bool bf16_heads = false;       // bfloat16: the camera and DPT heads in bf16 too
  bool no_fused_kernels = false; // bfloat16 on CUDA: the blocks' glue as ATen ops instead of the fused kernels
  bool exact_gelu = false;       // bfloat16 on CUDA: the erf GELU as its own kernel, not in the fc1 GEMM's epilogue (tanh form)
  bool fp8_gemms = false;        // bfloat16 on CUDA: the blocks' matrix products from FP8 operands

  void Add(CLI::App& app);
  models::ModelOptions ToOptions() const;  // dtype, device and graphs; the cache is the caller's
  std::string Device() const;              // the device, "auto" resolved
  // The options that decide the arithmetic and the speed (dtype, device resolved, graphs, heads,
  // fused kernels, GELU form, FP8), as the output files record them.
  nlohmann::json ToJson() const;
};

struct CacheArgs {
  std::string policy = "none";  // none | xstream | xstream-page | window | random
  std::string format = "fp32";  // fp32 | bf16 | kivi4 | kivi2 | oscar4 | oscar2
  std::string budget;           // byte budget of all caches ("2GB", "512MiB", "1048576"); empty = none
  int64_t cache_tokens = 0;     // per-layer token capacity
  int pool = 16;                // XStreamVGGT query pool size
  int k_group = 32;             // tokens per page (K group)
  int v_group = 64;             // channels per V group
  bool first_frame_bf16 = false;
  bool v_hadamard = false;
  uint64_t prune_seed = 0;
  // The CUDA backend's kernel choices (experiments and benchmarks).
  std::string attention_path = "auto";  // auto | fused | dequant | dequant-bucketed | int8
  std::string sdpa_backend = "auto";    // auto | flash | cudnn | efficient
  std::string query_tail = "flash-beside-rest";  // flash | flash-beside | flash-beside-rest | pages | pages-first
  int query_tail_splits = 0;
  int64_t attention_chunk_tokens = 0;
  int append_kernel = 0;
  int append_heads_per_block = 0;
  int fused_min_blocks = 1;
  bool serial_maintenance = false;

  // with_axes = false leaves out --policy, --format and --kv-budget, for commands that sweep them.
  void Add(CLI::App& app, bool with_axes = true);
  KvCacheOptions ToOptions() const;
  // The CUDA backend's kernel choices above, as the output files record them.
  nlohmann::json KernelJson() const;
  // These options with one sweep configuration's policy, format and budget ("" = none); policy
  // "none" drops the capacities.
  KvCacheOptions ForConfiguration(const std::string& policy, const std::string& format, const std::string& budget) const;
};

// An option or budget error from core names option fields (cache_tokens, budget_bytes, ...): this
// names the flags that set them instead (--cache-tokens, --kv-budget, ...).
std::string WithFlagNames(const std::string& message);

// The model a command runs, opened the same way by every command: the cache options checked
// first (a bad combination fails before the weights load), the weights loaded and their notes
// logged (the shipped model when no --weights is given and allow_default), the StreamingModel
// built, and the weights released. cache: nullptr for the default cache.
struct OpenedModel {
  models::LoadedModel loaded;  // config, weights_path, notes; weights already released
  std::shared_ptr<models::StreamingModel> model;
};
OpenedModel OpenModel(const ModelArgs& model, const CacheArgs* cache, bool allow_default = true);
// The weights alone, loaded and their notes logged as OpenModel does, for commands that build one
// model per configuration from them (bench).
models::LoadedModel LoadWeights(const ModelArgs& model, bool allow_default = true);

// Where the model's weights came from, for run.json and reports: {"path", "sha256"} of the file
// read (hashed on another thread from construction on, so a 5 GB checkpoint costs no wall time),
// or {"random_seed"} for random weights.
class WeightsRecord {
 public:
  WeightsRecord(const models::LoadedModel& loaded, int64_t random_seed);
  // Waits for the hash; a file that can no longer be read is recorded as such, not thrown.
  nlohmann::json Get();

 private:
  std::string path_;
  int64_t random_seed_;
  std::future<std::string> sha256_;
};

// --poses: where each frame's camera comes from. "tracked": the camera head's motion checked and
// corrected by SIFT matches and a PnP on the predicted depth (core/pose_tracker.h; CPU, beside the
// model); "head": the camera head's poses as predicted; "auto" (the default): tracked where this
// build has OpenCV, else head with a note.
void AddPosesOption(CLI::App& app, std::string& poses);
// Whether to track for that value: OptionError for an unknown value, and for "tracked" in a build
// without the tracker.
bool ResolvePoses(const std::string& poses);

// Where frames come from: a path (folder, glob, video, camera:N) or the synthetic scene, resized
// to the model's input size.
struct InputArgs {
  std::string input;         // image folder, glob, video file or camera:N
  int synthetic_frames = 0;  // > 0: render this many synthetic frames instead of --input
  std::string scene = "walk";  // the synthetic scene: walk|orbit|pan, optionally ":outdoor"
  std::string size;          // "W" or "WxH" (multiples of the patch size); default width 518
  int64_t max_frames = -1;   // stop after this many frames
  int every = 1;             // take every K-th frame
  bool strict = false;       // a damaged frame is an error instead of being skipped
  std::string intrinsics;    // known camera: "fx,fy,cx,cy" at the input's resolution, or a calibration file

  void Add(CLI::App& app);
};

// Frames already resized for the model, as [3, H, W] tensors, with their RGB images.
struct LoadedFrames {
  std::string description;
  std::vector<at::Tensor> tensors;
  std::vector<RgbImage> images;
};

// Reads every frame of the input (for benchmarks and analyses that replay the same frames).
LoadedFrames LoadFrames(const InputArgs& args, int patch_size, int default_width);

}  // namespace streamrecon::app
