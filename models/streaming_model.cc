// The model: DINO patch embed, alternating frame/global attention with 2D RoPE, camera head with
// its own trunk cache, and the two DPT heads. Numerics follow the reference (see spec/model.md):
// the positional-table resize and RoPE angles are computed in fp32 as the reference does.
#include "models/streaming_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <tuple>

#include "core/errors.h"
#ifdef STREAMRECON_HAVE_CUDA_KV
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <spdlog/spdlog.h>

#include "kernels/cuda_kv_cache.h"
#endif

namespace streamrecon::models {
namespace {

using at::Tensor;

// Weights of one transformer block (pre-norm, LayerScale).
struct BlockWeights {
  Tensor norm1_w, norm1_b, qkv_w, qkv_b, q_norm_w, q_norm_b, k_norm_w, k_norm_b, proj_w, proj_b, ls1;
  Tensor norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, ls2;
  int heads = 1;
  double eps = 1e-5;
  bool qk_norm = false;
};

struct DptWeights {
  std::string prefix;
  Tensor norm_w, norm_b;
  std::vector<Tensor> project_w, project_b;
  Tensor resize0_w, resize0_b, resize1_w, resize1_b, resize3_w, resize3_b;
  std::vector<Tensor> layer_rn;  // 4, no bias
};

// Cos/sin tables of the 2D RoPE for one frame layout: [P, D/2] for rows (y) and columns (x).
struct RopeTables {
  Tensor cos_y, sin_y, cos_x, sin_x;
};

Tensor RotateHalf(const Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// x: [H, N, D]; the first half of each head's channels is rotated by y, the second by x.
Tensor ApplyRope(const Tensor& x, const RopeTables& rope) {
  const int64_t half = x.size(-1) / 2;
  const Tensor vert = x.narrow(-1, 0, half);
  const Tensor horiz = x.narrow(-1, half, half);
  return at::cat({vert * rope.cos_y + RotateHalf(vert) * rope.sin_y, horiz * rope.cos_x + RotateHalf(horiz) * rope.sin_x}, -1);
}

// x @ w^T + b in w's dtype (bf16 weights: the autocast-like mixed mode), result in x's dtype.
Tensor Linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  if (w.scalar_type() == x.scalar_type()) return at::linear(x, w, b);
  return at::linear(x.to(w.scalar_type()), w, b).to(x.scalar_type());
}

// Softmax attention of [H, N, D] (or batched [B, H, N, D]) tensors, in bf16 when the block's
// weights are bf16. mask: optional [N, M] bool, true where a query may attend to a key.
Tensor Attention(const Tensor& q, const Tensor& k, const Tensor& v, at::ScalarType compute, const std::optional<Tensor>& mask = {}) {
  const bool batched = q.dim() == 4;
  auto prep = [&](const Tensor& t) {
    const Tensor c = compute == t.scalar_type() ? t : t.to(compute);
    return batched ? c : c.unsqueeze(0);
  };
  Tensor o = at::scaled_dot_product_attention(prep(q), prep(k), prep(v), mask);
  if (!batched) o = o.squeeze(0);
  return compute == q.scalar_type() ? o : o.to(q.scalar_type());
}

Tensor LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

Tensor Mlp(const BlockWeights& b, const Tensor& x) {
  return Linear(at::gelu(Linear(x, b.fc1_w, b.fc1_b)), b.fc2_w, b.fc2_b);
}

// q, k, v of x [..., N, C] as [..., H, N, D], with qk-norm and RoPE when the block has them.
std::tuple<Tensor, Tensor, Tensor> Qkv(const BlockWeights& b, const Tensor& x, const RopeTables* rope) {
  const int64_t c = x.size(-1);
  // [..., N, 3C] -> [..., N, 3, H, D] -> [3, ..., H, N, D]
  const Tensor qkv = Linear(x, b.qkv_w, b.qkv_b).unflatten(-1, {3, b.heads, c / b.heads}).movedim(-3, 0).transpose(-3, -2);
  Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  if (b.qk_norm) {
    q = LayerNorm(q, b.q_norm_w, b.q_norm_b, b.eps);
    k = LayerNorm(k, b.k_norm_w, b.k_norm_b, b.eps);
  }
  if (rope) {
    q = ApplyRope(q, *rope);
    k = ApplyRope(k, *rope);
  }
  return {q, k, v.contiguous()};
}

Tensor MergeHeads(const Tensor& o) {  // [..., H, N, D] -> [..., N, H*D]
  return o.transpose(-3, -2).flatten(-2);
}

// A block attending within x only. x: [N, C] or batched [B, N, C]; mask as Attention's.
Tensor SelfBlock(const BlockWeights& b, const Tensor& x, const RopeTables* rope, const std::optional<Tensor>& mask = {}) {
  auto [q, k, v] = Qkv(b, LayerNorm(x, b.norm1_w, b.norm1_b, b.eps), rope);
  const Tensor o = Attention(q, k, v, b.qkv_w.scalar_type(), mask);
  Tensor y = x + b.ls1 * Linear(MergeHeads(o), b.proj_w, b.proj_b);
  return y + b.ls2 * Mlp(b, LayerNorm(y, b.norm2_w, b.norm2_b, b.eps));
}

// The parts of a cached block before and after its attention: q, k, v of x, and the residual
// update from the attention output o [H, N, D] and the MLP.
std::tuple<Tensor, Tensor, Tensor> BlockPre(const BlockWeights& b, const Tensor& x, const RopeTables* rope) {
  return Qkv(b, LayerNorm(x, b.norm1_w, b.norm1_b, b.eps), rope);
}

Tensor BlockPost(const BlockWeights& b, const Tensor& x, const Tensor& o) {
  Tensor y = x + b.ls1 * Linear(MergeHeads(o), b.proj_w, b.proj_b);
  return y + b.ls2 * Mlp(b, LayerNorm(y, b.norm2_w, b.norm2_b, b.eps));
}

// A block attending to its cache plus x; appends x's keys/values, then prunes. x: [N, C].
Tensor CachedBlock(const BlockWeights& b, const Tensor& x, const RopeTables* rope, LayerKvCache& cache) {
  auto [q, k, v] = BlockPre(b, x, rope);
  return BlockPost(b, x, cache.Forward(q, k, v));
}

// Residual conv unit with the reference's in-place ReLU quirk: the skip adds relu(x).
Tensor Rcu(const StateDict& w, const std::string& p, const Tensor& x) {
  const Tensor rx = at::relu(x);
  const Tensor h = at::conv2d(rx, w.at(p + ".conv1.weight"), w.at(p + ".conv1.bias"), 1, 1);
  return at::conv2d(at::relu(h), w.at(p + ".conv2.weight"), w.at(p + ".conv2.bias"), 1, 1) + rx;
}

Tensor Bilinear(const Tensor& x, int64_t h, int64_t w) {
  return at::upsample_bilinear2d(x, {h, w}, /*align_corners=*/true);
}

}  // namespace

void ModelOptions::Check() const {
  if (dtype != "float32" && dtype != "float64" && dtype != "bfloat16")
    throw OptionError("unsupported dtype '" + dtype + "': expected float32, float64 or bfloat16 (bf16 matrix work, fp32 norms/residual/heads)");
  if (device != "cpu" && device.rfind("cuda", 0) != 0) throw OptionError("unsupported device '" + device + "': expected cpu or cuda[:N]");
  if (cuda_graphs && device == "cpu") throw OptionError("CUDA graphs need --device cuda");
  if (trainable && dtype == "bfloat16")
    throw OptionError("a trainable model keeps float32 (or float64) weights; bf16 matrix work in training comes from autocast");
  cache.Check();
#ifndef STREAMRECON_HAVE_CUDA_KV
  if (device != "cpu")
    throw OptionError("--device " + device + ": this build has no CUDA KV-cache kernels (configure with STREAMRECON_TORCH_CUDA=ON on a CUDA machine)");
#endif
}

struct StreamingModel::Impl {
  ModelConfig config;
  ModelOptions options;
  at::TensorOptions topts;
  StateDict w;  // converted weights

  std::vector<BlockWeights> dino_blocks, frame_blocks, global_blocks, trunk_blocks;
  DptWeights depth_head, point_head;
  std::vector<std::unique_ptr<LayerKvCache>> global_caches, trunk_caches;
  int64_t frames = 0;
  BudgetPlan plan;
  int64_t max_bytes = 0;
  StageTimings timings;
  std::chrono::steady_clock::time_point mark;

  // With stage timing: adds the time since the last mark to `slot` (after the device finished).
  void Lap(double* slot) {
    if (!options.stage_timing) return;
#ifdef STREAMRECON_HAVE_CUDA_KV
    if (topts.device().is_cuda()) c10::cuda::device_synchronize();
#endif
    const auto now = std::chrono::steady_clock::now();
    if (slot) *slot += std::chrono::duration<double, std::milli>(now - mark).count();
    mark = now;
  }

  // Per-layout caches (frames of one stream share a size; recomputed when it changes).
  int64_t layout_h = -1, layout_w = -1;
  Tensor dino_pos;  // [1 + h*w, C]
  RopeTables rope;

  BlockWeights LoadBlock(const std::string& p, int heads, double eps, bool qk_norm) {
    BlockWeights b;
    b.heads = heads;
    b.eps = eps;
    b.qk_norm = qk_norm;
    b.norm1_w = w.at(p + "norm1.weight");
    b.norm1_b = w.at(p + "norm1.bias");
    b.qkv_w = w.at(p + "attn.qkv.weight");
    b.qkv_b = w.at(p + "attn.qkv.bias");
    if (qk_norm) {
      b.q_norm_w = w.at(p + "attn.q_norm.weight");
      b.q_norm_b = w.at(p + "attn.q_norm.bias");
      b.k_norm_w = w.at(p + "attn.k_norm.weight");
      b.k_norm_b = w.at(p + "attn.k_norm.bias");
    }
    b.proj_w = w.at(p + "attn.proj.weight");
    b.proj_b = w.at(p + "attn.proj.bias");
    b.ls1 = w.at(p + "ls1.gamma");
    b.norm2_w = w.at(p + "norm2.weight");
    b.norm2_b = w.at(p + "norm2.bias");
    b.fc1_w = w.at(p + "mlp.fc1.weight");
    b.fc1_b = w.at(p + "mlp.fc1.bias");
    b.fc2_w = w.at(p + "mlp.fc2.weight");
    b.fc2_b = w.at(p + "mlp.fc2.bias");
    b.ls2 = w.at(p + "ls2.gamma");
    return b;
  }

  DptWeights LoadDpt(const std::string& p) {
    DptWeights d;
    d.prefix = p;
    d.norm_w = w.at(p + "norm.weight");
    d.norm_b = w.at(p + "norm.bias");
    for (int i = 0; i < 4; ++i) {
      d.project_w.push_back(w.at(p + "projects." + std::to_string(i) + ".weight"));
      d.project_b.push_back(w.at(p + "projects." + std::to_string(i) + ".bias"));
      d.layer_rn.push_back(w.at(p + "scratch.layer" + std::to_string(i + 1) + "_rn.weight"));
    }
    d.resize0_w = w.at(p + "resize_layers.0.weight");
    d.resize0_b = w.at(p + "resize_layers.0.bias");
    d.resize1_w = w.at(p + "resize_layers.1.weight");
    d.resize1_b = w.at(p + "resize_layers.1.bias");
    d.resize3_w = w.at(p + "resize_layers.3.weight");
    d.resize3_b = w.at(p + "resize_layers.3.bias");
    return d;
  }

  void ResetCaches() {
    global_caches.clear();
    trunk_caches.clear();
    for (int i = 0; i < config.depth; ++i) {
#ifdef STREAMRECON_HAVE_CUDA_KV
      if (topts.device().is_cuda() && options.cache.format != CacheFormat::kDense) {
        global_caches.push_back(kernels::MakeCudaLayerKvCache(options.cache));
        continue;
      }
#endif
      global_caches.push_back(MakeLayerKvCache(options.cache));
    }
    // The camera trunk cache is pruned by the same routine with one token per entry (N = 1),
    // stored dense (bf16 unless the global layers use the model dtype).
    KvCacheOptions trunk = options.cache;
    trunk.special_tokens = 1;
    trunk.format = TrunkFormat(options.cache.format);
    for (int i = 0; i < config.camera_head.trunk_depth; ++i) trunk_caches.push_back(MakeLayerKvCache(trunk));
    frames = 0;
    max_bytes = 0;
    plan = BudgetPlan{};
  }

  CacheGeometry Geometry() const {
    CacheGeometry g;
    g.global_layers = config.depth;
    g.heads = config.num_heads;
    g.head_dim = config.head_dim();
    g.trunk_layers = config.camera_head.trunk_depth;
    g.trunk_width = config.camera_head.dim_in;
    g.trunk_tokens_per_frame = config.camera_head.iterations;
    g.dense_elem_bytes = static_cast<int>(c10::elementSize(topts.dtype().toScalarType()));
    return g;
  }

  // At the first frame the token count is known: derive and set every layer's capacity.
  void PlanCaches(int64_t frame_tokens) {
    plan = PlanBudget(options.cache, Geometry(), frame_tokens);
    for (auto& c : global_caches) c->SetCapacity(plan.global);
    for (auto& c : trunk_caches) c->SetCapacity(plan.trunk);
  }

  int64_t Bytes() const {
    int64_t total = 0;
    for (const auto& c : global_caches) total += c->bytes();
    for (const auto& c : trunk_caches) total += c->bytes();
    return total;
  }

  // Positional table for an h x w patch grid: bicubic (antialiased) resize of the trained grid, in fp32.
  void PrepareLayout(int64_t h, int64_t wd) {
    if (h == layout_h && wd == layout_w) return;
    layout_h = h;
    layout_w = wd;
    uv_cache.clear();  // (keyed by map sizes only: the image aspect belongs to the layout)
    dino_pos = PositionalTable(h, wd);

    // RoPE: special tokens at (0, 0), patch (r, c) at (r + 1, c + 1); angles in fp32 like the reference.
    const int64_t n_special = config.special_tokens();
    const auto lopts = at::TensorOptions().dtype(at::kLong);
    Tensor rows = at::arange(h, lopts).repeat_interleave(wd) + 1;
    Tensor cols = at::arange(wd, lopts).repeat({h}) + 1;
    rows = at::cat({at::zeros({n_special}, lopts), rows});
    cols = at::cat({at::zeros({n_special}, lopts), cols});
    const int64_t dim = config.head_dim() / 2;  // channels per axis
    const Tensor inv_freq = 1.0 / at::pow(config.rope_frequency, at::arange(0, dim, 2, lopts).to(at::kFloat) / dim);
    auto tables = [&](const Tensor& pos, Tensor& cos, Tensor& sin) {
      Tensor angles = at::outer(pos.to(at::kFloat), inv_freq).to(topts.dtype());
      angles = at::cat({angles, angles}, -1);  // [P, dim]
      cos = angles.cos().to(topts);
      sin = angles.sin().to(topts);
    };
    tables(rows, rope.cos_y, rope.sin_y);
    tables(cols, rope.cos_x, rope.sin_x);
  }

  // The DINO positional table [1 + h*w, C] for an h x w patch grid (differentiable in the weights).
  Tensor PositionalTable(int64_t h, int64_t wd) {
    const int64_t C = config.embed_dim;
    const int64_t M = config.pos_grid();
    const Tensor table = w.at("aggregator.patch_embed.pos_embed").to(at::kFloat)[0];  // [1 + M*M, C]
    const Tensor cls_pos = table.narrow(0, 0, 1);
    Tensor grid = table.narrow(0, 1, M * M).reshape({1, M, M, C}).permute({0, 3, 1, 2});
    Tensor resized;
    if (h == M && wd == M) {
      resized = grid;
    } else if (config.dino.interpolate_offset != 0.0) {
      const double sy = (h + config.dino.interpolate_offset) / M, sx = (wd + config.dino.interpolate_offset) / M;
      const int64_t oh = static_cast<int64_t>(std::floor(M * sy)), ow = static_cast<int64_t>(std::floor(M * sx));
      resized = config.dino.interpolate_antialias ? at::_upsample_bicubic2d_aa(grid, {oh, ow}, false, sy, sx)
                                                  : at::upsample_bicubic2d(grid, {oh, ow}, false, sy, sx);
      if (oh != h || ow != wd) throw Error("positional grid resize produced the wrong size (interpolate_offset too large?)");
    } else {
      resized = config.dino.interpolate_antialias ? at::_upsample_bicubic2d_aa(grid, {h, wd}, false)
                                                  : at::upsample_bicubic2d(grid, {h, wd}, false);
    }
    const Tensor patch_pos = resized.permute({0, 2, 3, 1}).reshape({h * wd, C});
    return at::cat({cls_pos, patch_pos}, 0).to(topts);
  }

  // DINO patch embed. img: [F, 3, H, W] normalised; pos: the positional table [1 + h*w, C].
  // Returns patch tokens [F, h*w, C].
  Tensor PatchEmbed(const Tensor& img, const Tensor& pos) {
    const int64_t F = img.size(0), C = config.embed_dim;
    const Tensor& proj_w = w.at("aggregator.patch_embed.patch_embed.proj.weight");
    Tensor x = at::conv2d(img.to(proj_w.scalar_type()), proj_w, w.at("aggregator.patch_embed.patch_embed.proj.bias"), config.patch_size)
                   .to(topts.dtype());
    x = x.flatten(2).transpose(1, 2);  // [F, h*w, C]
    x = at::cat({w.at("aggregator.patch_embed.cls_token")[0].expand({F, 1, C}), x}, 1) + pos;
    const Tensor registers = w.at("aggregator.patch_embed.register_tokens")[0];
    x = at::cat({x.narrow(1, 0, 1), registers.expand({F, registers.size(0), C}), x.narrow(1, 1, x.size(1) - 1)}, 1);
    for (const auto& b : dino_blocks) x = SelfBlock(b, x, nullptr);
    x = LayerNorm(x, w.at("aggregator.patch_embed.norm.weight"), w.at("aggregator.patch_embed.norm.bias"), 1e-6);
    const int64_t skip = 1 + config.dino.num_register_tokens;
    return x.narrow(1, skip, x.size(1) - skip);
  }

  // The DPT uv embeddings of the current layout, by (channels, h, w): the same for every frame.
  std::map<std::tuple<int64_t, int64_t, int64_t>, Tensor> uv_cache;

  Tensor UvEmbedding(int64_t channels, int64_t h, int64_t wd, double aspect) {
    Tensor& cached = uv_cache[{channels, h, wd}];
    if (!cached.defined()) cached = ComputeUvEmbedding(channels, h, wd, aspect);
    return cached;
  }

  // Sin/cos embedding of the DPT uv grid for a [C, h, w] map of an image with aspect W/H, scaled by 0.1.
  // Like the reference: coordinates in the model dtype, the embedding rounded to fp32.
  Tensor ComputeUvEmbedding(int64_t channels, int64_t h, int64_t wd, double aspect) {
    const double diag = std::sqrt(aspect * aspect + 1.0);
    const double span_x = aspect / diag, span_y = 1.0 / diag;
    const Tensor xs = at::linspace(-span_x * (wd - 1) / wd, span_x * (wd - 1) / wd, wd, topts);
    const Tensor ys = at::linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h, topts);
    const Tensor u = xs.unsqueeze(0).expand({h, wd}).reshape({-1}).to(at::kDouble);
    const Tensor v = ys.unsqueeze(1).expand({h, wd}).reshape({-1}).to(at::kDouble);
    const int64_t quarter = channels / 4;
    const Tensor omega = 1.0 / at::pow(100.0, at::arange(quarter, at::TensorOptions().dtype(at::kDouble).device(topts.device())) / static_cast<double>(quarter));
    auto embed = [&](const Tensor& p) {
      const Tensor a = at::outer(p, omega);
      return at::cat({a.sin(), a.cos()}, 1).to(at::kFloat);
    };
    const Tensor emb = at::cat({embed(u), embed(v)}, 1) * 0.1f;  // [h*w, C], fp32 like the reference
    return emb.reshape({h, wd, channels}).permute({2, 0, 1}).unsqueeze(0).to(topts);
  }

  Tensor Fusion(const DptWeights& d, int index, const Tensor& x, const Tensor* skip, int64_t oh, int64_t ow) {
    const std::string p = d.prefix + "scratch.refinenet" + std::to_string(index) + ".";
    Tensor out = x;
    if (skip) out = out + Rcu(w, p + "resConfUnit1", *skip);
    out = Rcu(w, p + "resConfUnit2", out);
    out = Bilinear(out, oh, ow);
    return at::conv2d(out, w.at(p + "out_conv.weight"), w.at(p + "out_conv.bias"));
  }

  // A DPT head over the tapped aggregator outputs ([F, P, 2C] each). Returns the raw [F, out, H, W] maps.
  Tensor Dpt(const DptWeights& d, const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W) {
    const double aspect = static_cast<double>(W) / H;
    const int64_t n_special = config.special_tokens();
    std::vector<Tensor> feats;
    for (int i = 0; i < 4; ++i) {
      Tensor x = taps[i].narrow(1, n_special, h * wd);
      x = LayerNorm(x, d.norm_w, d.norm_b, 1e-5);
      x = x.transpose(1, 2).reshape({x.size(0), x.size(2), h, wd});
      x = at::conv2d(x, d.project_w[i], d.project_b[i]);
      x = x + UvEmbedding(x.size(1), h, wd, aspect);
      if (i == 0) x = at::conv_transpose2d(x, d.resize0_w, d.resize0_b, 4);
      if (i == 1) x = at::conv_transpose2d(x, d.resize1_w, d.resize1_b, 2);
      if (i == 3) x = at::conv2d(x, d.resize3_w, d.resize3_b, 2, 1);
      feats.push_back(at::conv2d(x, d.layer_rn[i], {}, 1, 1));
    }
    Tensor out = Fusion(d, 4, feats[3], nullptr, feats[2].size(2), feats[2].size(3));
    out = Fusion(d, 3, out, &feats[2], feats[1].size(2), feats[1].size(3));
    out = Fusion(d, 2, out, &feats[1], feats[0].size(2), feats[0].size(3));
    out = Fusion(d, 1, out, &feats[0], 2 * feats[0].size(2), 2 * feats[0].size(3));
    const std::string s = d.prefix + "scratch.";
    out = at::conv2d(out, w.at(s + "output_conv1.weight"), w.at(s + "output_conv1.bias"), 1, 1);
    out = Bilinear(out, h * config.patch_size, wd * config.patch_size);
    out = out + UvEmbedding(out.size(1), out.size(2), out.size(3), aspect);
    out = at::relu(at::conv2d(out, w.at(s + "output_conv2.0.weight"), w.at(s + "output_conv2.0.bias"), 1, 1));
    return at::conv2d(out, w.at(s + "output_conv2.2.weight"), w.at(s + "output_conv2.2.bias"));
  }

  // The camera head's iterative refinement on camera tokens [..., 1, 2C] of the last aggregator
  // output; trunk(b, x) runs trunk block b on x with its cache (which the call appends x's keys and
  // values to). Returns the activated pose encoding [..., 1, 9] of the last iteration, or of every
  // iteration with all_iterations.
  std::vector<Tensor> CameraIterations(const Tensor& camera_token, const std::function<Tensor(size_t, const Tensor&)>& trunk,
                                       bool all_iterations) {
    const std::string p = "camera_head.";
    const Tensor tok = LayerNorm(camera_token, w.at(p + "token_norm.weight"), w.at(p + "token_norm.bias"), 1e-5);
    const Tensor tok_normed = at::layer_norm(tok, {tok.size(-1)}, {}, {}, 1e-6);
    auto activate = [](const Tensor& enc) { return at::cat({enc.narrow(-1, 0, 7), at::relu(enc.narrow(-1, 7, 2))}, -1); };
    Tensor pred;
    std::vector<Tensor> poses;
    for (int it = 0; it < config.camera_head.iterations; ++it) {
      const Tensor pose_in = pred.defined() ? pred : w.at(p + "empty_pose_tokens")[0];
      const Tensor cond = at::linear(pose_in, w.at(p + "embed_pose.weight"), w.at(p + "embed_pose.bias"));
      const auto mod = at::linear(at::silu(cond), w.at(p + "poseLN_modulation.1.weight"), w.at(p + "poseLN_modulation.1.bias")).chunk(3, -1);
      Tensor x = mod[2] * (tok_normed * (1 + mod[1]) + mod[0]) + tok;
      for (size_t b = 0; b < trunk_blocks.size(); ++b) x = trunk(b, x);
      x = LayerNorm(x, w.at(p + "trunk_norm.weight"), w.at(p + "trunk_norm.bias"), 1e-5);
      const Tensor delta = at::linear(at::gelu(at::linear(x, w.at(p + "pose_branch.fc1.weight"), w.at(p + "pose_branch.fc1.bias"))),
                                      w.at(p + "pose_branch.fc2.weight"), w.at(p + "pose_branch.fc2.bias"));
      pred = pred.defined() ? pred + delta : delta;
      if (all_iterations || it + 1 == config.camera_head.iterations) poses.push_back(activate(pred));
    }
    return poses;
  }

  // Camera head of one streamed frame ([1, 2C] camera token); returns the pose encoding [9].
  Tensor CameraHead(const Tensor& camera_token) {
    auto trunk = [&](size_t b, const Tensor& x) { return CachedBlock(trunk_blocks[b], x, nullptr, *trunk_caches[b]); };
    return CameraIterations(camera_token, trunk, false).back()[0];
  }

  // A whole sequence at once with block-causal global attention (frame t attends to frames 0..t),
  // which is what streaming with the full cache computes. images: [B, S, 3, H, W] in [0, 1].
  SequenceOutput ForwardSequence(const Tensor& images) {
    if (images.dim() != 5 || images.size(2) != 3)
      throw Error("sequence input must be [B, S, 3, H, W] RGB, got " + std::string(c10::str(images.sizes())));
    const int64_t B = images.size(0), S = images.size(1), H = images.size(3), W = images.size(4), ps = config.patch_size;
    if (B == 0 || S == 0 || H == 0 || W == 0 || H % ps != 0 || W % ps != 0)
      throw Error("sequence frames " + std::to_string(W) + "x" + std::to_string(H) + " are not a positive multiple of the patch size " +
                  std::to_string(ps));
    const int64_t h = H / ps, wd = W / ps, F = B * S;
#ifdef STREAMRECON_HAVE_CUDA_KV
    if (graphs && (graphs->H != H || graphs->W != W)) graphs.reset();  // before the layout tensors change
#endif
    PrepareLayout(h, wd);
    EnsureNormalisation();
    // The positional table is computed afresh: it depends on weights that training changes.
    const Tensor pos = PositionalTable(h, wd);
    const Tensor img = (images.to(topts).reshape({F, 3, H, W}) - norm_mean) / norm_std;
    const Tensor patches = PatchEmbed(img, pos);  // [F, hw, C]
    // Camera and register tokens: slot 0 for each sequence's first frame, slot 1 for the others.
    auto slots = [&](const Tensor& t) {  // [2, n, C] -> [F, n, C]
      const int64_t n = t.size(1), c = t.size(2);
      const Tensor per_sequence = at::cat({t.narrow(0, 0, 1), t.narrow(0, 1, 1).expand({S - 1, n, c})}, 0);
      return per_sequence.unsqueeze(0).expand({B, S, n, c}).reshape({F, n, c});
    };
    Tensor x = at::cat({slots(w.at("aggregator.camera_token")[0]), slots(w.at("aggregator.register_token")[0]), patches}, 1);
    const int64_t P = x.size(1), C = x.size(2);
    const Tensor frame_of = at::arange(S * P, at::TensorOptions().dtype(at::kLong).device(topts.device())).div(P, "floor");
    const Tensor causal = frame_of.unsqueeze(1) >= frame_of.unsqueeze(0);  // [S*P, S*P]
    const RopeTables rope_seq{rope.cos_y.repeat({S, 1}), rope.sin_y.repeat({S, 1}), rope.cos_x.repeat({S, 1}), rope.sin_x.repeat({S, 1})};
    std::vector<Tensor> outs(config.depth);
    for (int i = 0; i < config.depth; ++i) {
      const Tensor fo = SelfBlock(frame_blocks[i], x, &rope);
      const Tensor xg = fo.reshape({B, S * P, C});
      auto [q, k, v] = BlockPre(global_blocks[i], xg, &rope_seq);
      const Tensor o = Attention(q, k, v, global_blocks[i].qkv_w.scalar_type(), causal);
      x = BlockPost(global_blocks[i], xg, o).reshape({F, P, C});
      if (needed[i]) outs[i] = at::cat({fo, x}, -1);
    }
    SequenceOutput out;
    // Camera head: frame by frame (iteration k of frame t sees every iteration of frames < t and
    // iterations <= k of frame t, as the streaming trunk cache does), all sequences at once.
    const Tensor cam = outs[config.depth - 1].select(1, 0).reshape({B, S, 1, 2 * C});
    std::vector<Tensor> keys(trunk_blocks.size()), values(trunk_blocks.size());
    std::vector<std::vector<Tensor>> per_iteration(config.camera_head.iterations);
    for (int64_t t = 0; t < S; ++t) {
      auto trunk = [&](size_t b, const Tensor& xt) {
        auto [q, k, v] = BlockPre(trunk_blocks[b], xt, nullptr);  // [B, H, 1, D]
        keys[b] = keys[b].defined() ? at::cat({keys[b], k}, 2) : k;
        values[b] = values[b].defined() ? at::cat({values[b], v}, 2) : v;
        return BlockPost(trunk_blocks[b], xt, Attention(q, keys[b], values[b], q.scalar_type()));
      };
      const auto poses = CameraIterations(cam.select(1, t), trunk, true);
      for (size_t it = 0; it < poses.size(); ++it) per_iteration[it].push_back(poses[it].select(1, 0));  // [B, 9]
    }
    for (auto& poses : per_iteration) out.pose_iterations.push_back(at::stack(poses, 1));  // [B, S, 9]
    out.pose_enc = out.pose_iterations.back();
    std::vector<Tensor> taps;
    for (int idx : config.dpt.intermediate_layer_idx) taps.push_back(outs[idx]);
    const HeadsOut maps = DptHeads(taps, h, wd, H, W);
    auto unbatch = [&](const Tensor& t) {
      std::vector<int64_t> shape{B, S};
      for (int64_t d = 1; d < t.dim(); ++d) shape.push_back(t.size(d));
      return t.reshape(shape);
    };
    out.depth = unbatch(maps.depth);
    out.depth_conf = unbatch(maps.depth_conf);
    out.world_points = unbatch(maps.world_points);
    out.world_points_conf = unbatch(maps.world_points_conf);
    return out;
  }

  void EnsureNormalisation() {
    if (norm_mean.defined()) return;
    norm_mean = at::tensor(std::vector<float>{0.485f, 0.456f, 0.406f}).view({3, 1, 1}).to(topts);
    norm_std = at::tensor(std::vector<float>{0.229f, 0.224f, 0.225f}).view({3, 1, 1}).to(topts);
  }

  Tensor norm_mean, norm_std;  // the reference's input normalisation, on the device

  // Per-layer tensors of one step; with CUDA graphs they are the graphs' static buffers.
  std::vector<Tensor> frame_out, q, k, v, attn, outputs;
  std::vector<bool> needed;  // aggregator outputs the heads read

  // Token sequence of a frame: camera and register tokens (slot 0 for the first frame) and patches.
  Tensor Embed(const Tensor& img, int slot) {
    const Tensor patches = PatchEmbed(img, dino_pos)[0];
    return at::cat({w.at("aggregator.camera_token")[0][slot], w.at("aggregator.register_token")[0][slot], patches}, 0);
  }

  // Segment i of the aggregator between two cache attentions: the rest of global block i - 1 (from
  // its attention output attn[i - 1]), then frame block i and the q/k/v of global block i.
  void Segment(int i, Tensor x) {
    if (i > 0) {
      x = BlockPost(global_blocks[i - 1], frame_out[i - 1], attn[i - 1]);
      if (needed[i - 1]) outputs[i - 1] = at::cat({frame_out[i - 1], x}, -1);
    }
    if (i < config.depth) {
      frame_out[i] = SelfBlock(frame_blocks[i], x, &rope);
      std::tie(q[i], k[i], v[i]) = BlockPre(global_blocks[i], frame_out[i], &rope);
    }
  }

  struct HeadsOut {
    Tensor depth, depth_conf, world_points, world_points_conf;
  };

  // The DPT heads with their activations over taps [F, P, 2C]: maps [F, H, W, c].
  HeadsOut DptHeads(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W) {
    HeadsOut out;
    const Tensor depth_raw = Dpt(depth_head, taps, h, wd, H, W).permute({0, 2, 3, 1});  // [F, H, W, 2]
    out.depth = at::exp(depth_raw.narrow(3, 0, 1));
    out.depth_conf = 1 + at::exp(depth_raw.select(3, 1));
    const Tensor pts_raw = Dpt(point_head, taps, h, wd, H, W).permute({0, 2, 3, 1});  // [F, H, W, 4]
    const Tensor xyz = pts_raw.narrow(3, 0, 3);
    out.world_points = at::sign(xyz) * at::expm1(at::abs(xyz));
    out.world_points_conf = 1 + at::exp(pts_raw.select(3, 3));
    return out;
  }

  HeadsOut Heads(int64_t h, int64_t wd, int64_t H, int64_t W) {
    std::vector<Tensor> taps;
    for (int idx : config.dpt.intermediate_layer_idx) taps.push_back(outputs[idx].unsqueeze(0));
    HeadsOut out = DptHeads(taps, h, wd, H, W);
    for (Tensor* t : {&out.depth, &out.depth_conf, &out.world_points, &out.world_points_conf}) *t = (*t)[0];
    return out;
  }

  // One step, eager or replayed from graphs: the embedding, per layer the segment and the cache
  // attention (into attn[i], in place when graphs read it), the camera head, the DPT heads. With
  // static buffers the outputs are copies, since the next replay overwrites them.
  StepOutput RunStep(const std::function<void()>& embed, const std::function<void(int)>& segment,
                     const std::function<HeadsOut()>& heads, bool static_buffers) {
    auto take = [&](const Tensor& t) { return static_buffers ? t.clone() : t; };
    Lap(nullptr);
    embed();
    Lap(&timings.patch_embed);
    for (int i = 0; i <= config.depth; ++i) {
      segment(i);
      Lap(&timings.blocks);
      if (i < config.depth) {
        const Tensor o = global_caches[i]->Forward(q[i], k[i], v[i]);
        if (static_buffers) attn[i].copy_(o);
        else attn[i] = o;
        Lap(&timings.kv_attention);
        timings.cache_maintenance += global_caches[i]->maintenance_ms();
      }
    }
    ++frames;
    StepOutput out;
    // (the camera head appends to the trunk caches; bytes are sampled after it)
    out.tokens_last = take(outputs[config.depth - 1]);
    out.pose_enc = CameraHead(out.tokens_last.narrow(0, 0, 1));
    Lap(&timings.camera_head);
    const HeadsOut maps = heads();
    out.depth = take(maps.depth);
    out.depth_conf = take(maps.depth_conf);
    out.world_points = take(maps.world_points);
    out.world_points_conf = take(maps.world_points_conf);
    Lap(&timings.dpt_heads);
    max_bytes = std::max(max_bytes, Bytes());
    return out;
  }

#ifdef STREAMRECON_HAVE_CUDA_KV
  // Captured graphs of one frame size (see ModelOptions::cuda_graphs), replayed in capture order.
  struct Graphs {
    int64_t H = -1, W = -1;
    Tensor img, x0;  // static input image and embed output
    HeadsOut heads_out;
    std::unique_ptr<at::cuda::CUDAGraph> embed, heads;
    std::vector<std::unique_ptr<at::cuda::CUDAGraph>> segments;  // depth + 1
  };
  std::unique_ptr<Graphs> graphs;
  bool graphs_failed = false;

  void Capture(const Tensor& img, int64_t h, int64_t wd, int64_t H, int64_t W) {
    graphs.reset();
    auto g = std::make_unique<Graphs>();
    g->H = H;
    g->W = W;
    g->img = at::empty_like(img);
    g->img.copy_(img);
    const int64_t n = config.special_tokens() + h * wd;
    for (int i = 0; i < config.depth; ++i) attn[i] = at::zeros({config.num_heads, n, config.head_dim()}, topts);
    const auto pool = at::cuda::graph_pool_handle();
    c10::cuda::device_synchronize();
    const at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
    {
      c10::cuda::CUDAStreamGuard guard(side);
      // One eager pass on the capture stream first (library workspaces and plans for this stream).
      Tensor x = Embed(g->img, 1);
      for (int i = 0; i <= config.depth; ++i) Segment(i, x);
      Heads(h, wd, H, W);
      side.synchronize();
      auto capture = [&](std::unique_ptr<at::cuda::CUDAGraph>& graph, const std::function<void()>& body) {
        graph = std::make_unique<at::cuda::CUDAGraph>();
        // Thread-local capture: other threads of the pipeline (reader, accumulator, viewer) may
        // keep making CUDA calls while this one captures.
        graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
        body();
        graph->capture_end();
      };
      capture(g->embed, [&] { g->x0 = Embed(g->img, 1); });
      g->segments.resize(config.depth + 1);
      for (int i = 0; i <= config.depth; ++i) capture(g->segments[i], [&] { Segment(i, g->x0); });
      capture(g->heads, [&] { g->heads_out = Heads(h, wd, H, W); });
    }
    c10::cuda::device_synchronize();
    graphs = std::move(g);
  }

  // The step with graphs (capturing them first when needed). Returns false to run eagerly instead.
  bool GraphStep(const Tensor& img, int64_t h, int64_t wd, int64_t H, int64_t W, StepOutput& out) {
    if (!options.cuda_graphs || graphs_failed || frames < 2) {
      graphs.reset();  // the eager step below replaces the buffers the graphs read
      return false;
    }
    if (!graphs || graphs->H != H || graphs->W != W) {
      try {
        Capture(img, h, wd, H, W);
        spdlog::info("CUDA graphs captured for {}x{} frames ({} segments)", W, H, config.depth + 3);
      } catch (const std::exception& e) {
        graphs.reset();
        graphs_failed = true;
        spdlog::warn("CUDA graph capture failed, running eagerly: {}", e.what());
        (void)cudaGetLastError();
        return false;
      }
    }
    Graphs& g = *graphs;
    g.img.copy_(img);
    out = RunStep([&] { g.embed->replay(); }, [&](int i) { g.segments[i]->replay(); },
                  [&] {
                    g.heads->replay();
                    return g.heads_out;
                  },
                  /*static_buffers=*/true);
    return true;
  }
#endif

  StepOutput Step(const Tensor& image_in) {
    if (image_in.dim() != 3 || image_in.size(0) != 3)
      throw Error("model input must be [3, H, W] RGB, got " + std::string(c10::str(image_in.sizes())));
    const int64_t H = image_in.size(1), W = image_in.size(2), ps = config.patch_size;
    if (H % ps != 0 || W % ps != 0 || H == 0 || W == 0)
      throw Error("model input " + std::to_string(W) + "x" + std::to_string(H) + " is not a multiple of the patch size " + std::to_string(ps));
    const int64_t h = H / ps, wd = W / ps;
#ifdef STREAMRECON_HAVE_CUDA_KV
    if (graphs && (graphs->H != H || graphs->W != W)) graphs.reset();  // before the layout tensors change
#endif
    PrepareLayout(h, wd);

    if (options.trainable) dino_pos = PositionalTable(h, wd);  // the weights may have changed since the last frame

    c10::InferenceMode inference_mode;
    // Normalise like the reference (fp32 mean/std buffers). A host image goes up through pinned
    // memory, without waiting for the device to finish the previous frame.
    EnsureNormalisation();
    const bool upload = topts.device().is_cuda() && image_in.is_cpu();
    const Tensor on_device = upload ? image_in.contiguous().pin_memory().to(topts.device(), /*non_blocking=*/true) : image_in;
    const Tensor img = ((on_device.to(topts) - norm_mean) / norm_std).unsqueeze(0);

    if (frames == 0) PlanCaches(config.special_tokens() + h * wd);
    timings = StageTimings{};
    StepOutput out;
#ifdef STREAMRECON_HAVE_CUDA_KV
    if (topts.device().is_cuda() && GraphStep(img, h, wd, H, W, out)) return out;
#endif
    Tensor x;
    return RunStep([&] { x = Embed(img, frames == 0 ? 0 : 1); }, [&](int i) { Segment(i, x); },
                   [&] { return Heads(h, wd, H, W); }, /*static_buffers=*/false);
  }
};

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
  // stream, tokens and both heads stay fp32, like the reference's autocast.
  auto is_matrix = [](const std::string& name) {
    if (name.rfind("aggregator.", 0) != 0) return false;
    for (const char* suffix : {".qkv.weight", ".qkv.bias", ".proj.weight", ".proj.bias", ".fc1.weight", ".fc1.bias", ".fc2.weight", ".fc2.bias"}) {
      const std::string s(suffix);
      if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) return true;
    }
    return false;
  };
  for (const auto& [name, t] : weights) {
    if (IsIgnoredParameter(name)) continue;
    const bool bf16 = options.dtype == "bfloat16" && is_matrix(name);
    Tensor converted = t.to(bf16 ? m.topts.dtype(at::kBFloat16) : m.topts).contiguous();
    // Trainable: a copy of its own (never the caller's storage), a leaf that collects gradients.
    if (options.trainable) converted = converted.clone().detach().requires_grad_(true);
    m.w.emplace(name, converted);
  }

  for (int i = 0; i < config.dino.depth; ++i)
    m.dino_blocks.push_back(m.LoadBlock("aggregator.patch_embed.blocks." + std::to_string(i) + ".", config.dino.num_heads, 1e-6, false));
  for (int i = 0; i < config.depth; ++i) {
    m.frame_blocks.push_back(m.LoadBlock("aggregator.frame_blocks." + std::to_string(i) + ".", config.num_heads, 1e-5, true));
    m.global_blocks.push_back(m.LoadBlock("aggregator.global_blocks." + std::to_string(i) + ".", config.num_heads, 1e-5, true));
  }
  for (int i = 0; i < config.camera_head.trunk_depth; ++i)
    m.trunk_blocks.push_back(m.LoadBlock("camera_head.trunk." + std::to_string(i) + ".", config.camera_head.num_heads, 1e-5, false));
  for (auto* t : {&m.frame_out, &m.q, &m.k, &m.v, &m.attn, &m.outputs}) t->resize(config.depth);
  m.needed.assign(config.depth, false);
  for (int idx : config.dpt.intermediate_layer_idx) m.needed.at(idx) = true;
  m.needed[config.depth - 1] = true;
  m.depth_head = m.LoadDpt("depth_head.");
  m.point_head = m.LoadDpt("point_head.");
  m.ResetCaches();
}

StreamingModel::~StreamingModel() = default;

StepOutput StreamingModel::Step(const at::Tensor& image) { return impl_->Step(image); }

SequenceOutput StreamingModel::ForwardSequence(const at::Tensor& images) { return impl_->ForwardSequence(images); }

StateDict StreamingModel::Parameters() const { return impl_->w; }

void StreamingModel::Reset() {
#ifdef STREAMRECON_HAVE_CUDA_KV
  impl_->graphs.reset();
#endif
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
