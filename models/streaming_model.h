// The StreamVGGT-compatible streaming model in LibTorch: one frame per Step, the global KV cache
// (and the camera head's trunk cache) kept across steps behind core/kv/cache.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>

#include "core/kv/budget.h"
#include "core/kv/cache.h"
#include "core/types.h"
#include "models/config.h"
#include "models/weights.h"

namespace streamrecon::models {

struct ModelOptions {
  std::string dtype = "float32";  // float32 or float64 (CPU); weights are converted once at load
  std::string device = "cpu";     // cpu or cuda[:N]
  KvCacheOptions cache;           // global cache (and camera trunk cache) policy and capacity
  bool stage_timing = false;      // time each stage (synchronising the device; slows the step slightly)
  // CUDA only: from the third frame on, replay the fixed-shape parts of the step (patch embed, frame
  // blocks, the projections/MLPs of the global blocks, the DPT heads) as captured CUDA graphs; the
  // KV-cache attention and maintenance run eagerly between them. The camera head joins them as one
  // graph once its trunk caches are full (a bounded, pruned cache; not with the random policy).
  bool cuda_graphs = false;
  // bfloat16 only: the camera head's and the DPT heads' matrix work in bf16 too (channels-last
  // convolutions on CUDA). Faster; not the reference's fp32 heads (docs/perf.md reports the deviation).
  bool bf16_heads = false;
  // bfloat16 on CUDA: the glue around the blocks' matrix work (LayerNorm + cast, residual +
  // LayerNorm, qkv split + qk-norm + RoPE) as fused kernels (kernels/block_ops.h); false: the ATen
  // ops (the same arithmetic, more kernels; for comparisons and debugging).
  bool fused_kernels = true;
  // bfloat16 on CUDA: fc1's bias and GELU in its GEMM's cuBLASLt epilogue, where GELU is the tanh
  // form (at most 4.8e-4 from the reference's erf form, absolute; docs/perf.md reports the
  // deviation); false: ATen's erf GELU as its own kernel.
  bool gelu_epilogue = true;
  // bfloat16 on CUDA with the fused kernels: the blocks' four matrix products (qkv, proj, fc1, fc2)
  // from FP8 e4m3 operands (per-channel weight scales at load, per-token activation scales on the
  // fly) through at::_scaled_mm; needs an FP8 GPU (sm_89 or newer). Not the reference's bf16
  // products: docs/perf.md reports the deviation and the time.
  bool fp8_gemms = false;
  // Training: the weights are the model's own copies that collect gradients (Parameters()), and
  // ForwardSequence is differentiable. Needs float32 or float64.
  bool trainable = false;

  void Check() const;  // throws OptionError
  // bf16 matrix work on a CUDA device: where fused_kernels, gelu_epilogue and fp8_gemms apply.
  bool Bf16OnCuda() const { return dtype == "bfloat16" && device.rfind("cuda", 0) == 0; }
  // Whether the blocks run the fused kernels / the GELU epilogue (the option and bf16 on CUDA).
  bool FusedBlocks() const { return fused_kernels && Bf16OnCuda(); }
  bool GeluInEpilogue() const { return gelu_epilogue && Bf16OnCuda(); }
};

// Milliseconds per stage of the last Step (with ModelOptions::stage_timing). `blocks`: the frame
// blocks and the global blocks' norms, projections and MLPs; `kv_attention`: the global blocks'
// attention over the KV cache including cache maintenance (pruning, append), also given alone.
struct StageTimings {
  double patch_embed = 0, blocks = 0, kv_attention = 0, cache_maintenance = 0, camera_head = 0, dpt_heads = 0;
};

// Raw per-frame outputs as tensors (on the model's device and dtype).
struct StepOutput {
  at::Tensor pose_enc;           // [9]
  at::Tensor depth;              // [H, W, 1]
  at::Tensor depth_conf;         // [H, W]
  at::Tensor world_points;       // [H, W, 3]
  at::Tensor world_points_conf;  // [H, W]
  at::Tensor tokens_last;        // [P, 2C], the last aggregator output
  bool camera_graph = false;     // the camera head was replayed from a CUDA graph
  bool step_graph = false;       // the aggregator with its cache attentions, and the DPT heads, ran as the whole-step CUDA graphs
  bool step_graph_captured = false;  // ... captured on this frame (the first steady frame, or a recapture)
  // Set by Step(image, /*defer_pose=*/true) when the camera head's graph was still running on a
  // second stream as the step returned: pose_enc is written until this event completes. The other
  // outputs are ready on the current stream as usual.
  std::shared_ptr<c10::Event> pose_ready;
  // Orders the current stream after pose_ready (a no-op when it is not set).
  void JoinPose() const;
};

// Outputs of a whole sequence computed at once (ForwardSequence), on the model's device and dtype.
struct SequenceOutput {
  at::Tensor pose_enc;                       // [B, S, 9], the last refinement iteration
  std::vector<at::Tensor> pose_iterations;   // camera_head.iterations x [B, S, 9], activated
  at::Tensor depth;                          // [B, S, H, W, 1]
  at::Tensor depth_conf;                     // [B, S, H, W]
  at::Tensor world_points;                   // [B, S, H, W, 3], in each sequence's first camera
  at::Tensor world_points_conf;              // [B, S, H, W]
};

// What the caches hold right now (for logs, the viewer panel and benchmarks).
struct CacheReport {
  std::string format;                    // storage format of the global layers
  std::string policy;                    // pruning policy
  uint64_t budget_bytes = 0;             // 0 = unbounded
  int64_t bytes = 0;                     // every cache (global + trunk) now
  int64_t max_bytes = 0;                 // the largest `bytes` seen after any frame
  int64_t global_bytes = 0;              // global layers only
  std::vector<int64_t> tokens_per_layer; // global layers
  int64_t trunk_tokens = 0;              // camera trunk (all blocks)
  double effective_bits = 0;             // bits per stored K/V value in the global layers
  BudgetPlan plan;                       // capacities chosen at the first frame
  std::vector<QuantStats> layer_stats;   // quantization error per global layer
};

class StreamingModel {
 public:
  // Checks the weights against the config (WeightsError names every bad key) and converts them.
  StreamingModel(const ModelConfig& config, const StateDict& weights, const ModelOptions& options);
  ~StreamingModel();

  // Runs one frame. image: [3, H, W] RGB in [0, 1], H and W multiples of the patch size.
  // defer_pose: when the camera head replays as a CUDA graph beside the DPT heads, return without
  // waiting for it, so that it also runs beside the next frame's aggregator; the output's
  // pose_ready says when its pose is written (a caller that reads the pose joins it, or waits for
  // it on the host). Without it, every output is ready on the current stream.
  StepOutput Step(const at::Tensor& image, bool defer_pose = false);

  // Forgets the stream (caches emptied; the next frame is a first frame).
  void Reset();
  // Tests only: each paged global cache acts as if its token count had drifted below the rows its
  // attention takes as certain, so that a graphed model captures its step again on the next frame.
  void ForgetCertainRowsForTesting();

  // B sequences of S frames at once, for training: block-causal global attention (frame t attends
  // to frames 0..t of its sequence), equal to streaming them frame by frame with the full cache.
  // images: [B, S, 3, H, W] RGB in [0, 1]. Differentiable when the model is trainable and grad mode
  // is on; the streaming caches are neither read nor changed.
  SequenceOutput ForwardSequence(const at::Tensor& images);

  // The tensors the model computes with, by checkpoint name (shared, not copied: with
  // ModelOptions::trainable these are the parameters an optimiser updates).
  StateDict Parameters() const;

  int64_t frames_seen() const;
  // Tokens held by the cache of global layer `layer`.
  int64_t CachedTokens(int layer) const;
  // Bytes held by every cache (global layers and camera trunk).
  int64_t CacheBytes() const;
  const ModelConfig& config() const;
  CacheReport Cache() const;
  // The cache's bytes and tokens per global layer as they were when the last Step began (after the
  // frame before it), read without waiting for the device. A caller that queues frame t + 1 before
  // it completes frame t reports these for frame t (`run` and `view` do).
  struct CacheCounts {
    int64_t bytes = 0;
    uint64_t budget_bytes = 0;  // 0 = unbounded
    std::vector<int64_t> tokens_per_layer;
  };
  CacheCounts CacheBeforeLastStep() const;
  // Stage times of the last Step (zeros unless ModelOptions::stage_timing).
  const StageTimings& LastTimings() const;
  // The kept keys and values of global layer `layer` as attention reads them: [H, T, D] each.
  std::pair<at::Tensor, at::Tensor> CachedKv(int layer) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Convenience: loads weights (config from the safetensors header when config_name is empty).
// random_seed >= 0 builds seeded random weights instead of reading a file. With neither a path nor
// a seed, the shipped default model (DefaultWeightsPath()) when allow_default, else an OptionError.
struct LoadedModel {
  ModelConfig config;
  StateDict weights;
  std::vector<std::string> notes;
  std::string weights_path;  // the file read ("" for random weights)
};
LoadedModel LoadModelWeights(const std::string& weights_path, const std::string& config_name, int64_t random_seed,
                             bool allow_default = true);

// The shipped default model: $STREAMRECON_DEFAULT_WEIGHTS when set, else models/recon_small.safetensors
// of the source tree this binary was built from (recon-small, trained by `streamrecon train` on
// synthetic scenes; docs/training.md).
std::string DefaultWeightsPath();

// An event recorded now on the current stream of `device` (a GPU's; null on the CPU): what has been
// queued there so far is done once it completes.
std::shared_ptr<c10::Event> RecordOnCurrentStream(c10::Device device);

// A step's pose on its way into pinned host memory, queued without waiting: for a deferred pose on
// a stream of its own that waits for the camera head (so that work queued next on the current
// stream does not), else on the current stream behind the step. `ready` marks its arrival (unset
// for a pose already on the host, which `host` then is).
struct PoseCopy {
  at::Tensor host;  // [9]
  std::shared_ptr<c10::Event> ready;
};
PoseCopy StartPoseCopy(const StepOutput& out);

// Converts a StepOutput to the plain FramePrediction used by exporters and the viewer.
FramePrediction ToFramePrediction(const StepOutput& out, const RgbImage& image, int64_t index);

// [3, H, W] float tensor in [0, 1] from an RGB8 image.
at::Tensor ImageToTensor(const RgbImage& image);

}  // namespace streamrecon::models
