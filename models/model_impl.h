// The streaming model's implementation state and step, shared by streaming_model.cc (weights,
// the public API) and cuda_graphs.cc (capture and replay of the step); not a public header.
// The step: the patch embedding, per layer a segment (rest of the previous global block, frame
// block, q/k/v) and the cache attention, then the camera head and the DPT heads.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include "core/errors.h"
#include "models/layers.h"
#include "models/streaming_model.h"

namespace streamrecon::models {

using namespace layers;

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
  int64_t bytes_before_step = 0;  // Bytes() when the last Step began
  StageTimings timings;
  std::chrono::steady_clock::time_point mark;

  // With stage timing: adds the time since the last mark to `slot` (after the device finished).
  void Lap(double* slot) {
    if (!options.stage_timing) return;
    SynchronizeDevice(topts.device());
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
    b.fused = options.FusedBlocks();
    b.gelu_epilogue = options.GeluInEpilogue();
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
    if (options.fp8_gemms && layers::Fp8Eligible(b)) {
      b.qkv8 = layers::QuantizeFp8Weight(b.qkv_w);
      b.proj8 = layers::QuantizeFp8Weight(b.proj_w);
      b.fc1_8 = layers::QuantizeFp8Weight(b.fc1_w);
      b.fc2_8 = layers::QuantizeFp8Weight(b.fc2_w);
    }
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
    for (int i = 0; i < config.depth; ++i) global_caches.push_back(MakeLayerKvCache(options.cache, topts.device()));
    // The camera trunk cache is pruned by the same routine with one token per entry (N = 1),
    // stored dense (bf16 unless the global layers use the model dtype).
    KvCacheOptions trunk = options.cache;
    trunk.special_tokens = 1;
    trunk.format = TrunkFormat(options.cache.format);
    // Bounded and pruned (one token per call), it lives in fixed slots with eviction on the device,
    // which a CUDA graph can replay once full; otherwise it grows as the reference cache.
    const bool slots = options.cache.bounded() && options.cache.policy != PrunePolicy::kNone;
    for (int i = 0; i < config.camera_head.trunk_depth; ++i)
      trunk_caches.push_back(slots ? MakeSlotKvCache(trunk) : MakeLayerKvCache(trunk, topts.device(), KvBackendKind::kReference));
    frames = 0;
    max_bytes = 0;
    bytes_before_step = 0;
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
    Tensor cos_y, sin_y, cos_x, sin_x;
    tables(rows, cos_y, sin_y);
    tables(cols, cos_x, sin_x);
    rope = MakeRopeTables(cos_y, sin_y, cos_x, sin_x);
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
    Pending out{x};
    for (const auto& b : dino_blocks) out = SelfBlock(b, out, nullptr, nullptr);
    x = LayerNorm(Resolve(out), w.at("aggregator.patch_embed.norm.weight"), w.at("aggregator.patch_embed.norm.bias"), 1e-6);
    const int64_t skip = 1 + config.dino.num_register_tokens;
    return x.narrow(1, skip, x.size(1) - skip);
  }

  // The DPT uv embeddings of the current layout, by (channels, h, w): the same for every frame.
  std::map<std::tuple<int64_t, int64_t, int64_t>, Tensor> uv_cache;

  // The DPT heads' dtype: the model's, or bf16 with ModelOptions::bf16_heads.
  at::ScalarType HeadType() const { return options.bf16_heads ? at::kBFloat16 : topts.dtype().toScalarType(); }

  Tensor UvEmbedding(int64_t channels, int64_t h, int64_t wd, double aspect) {
    Tensor& cached = uv_cache[{channels, h, wd}];
    if (!cached.defined()) cached = ComputeUvEmbedding(channels, h, wd, aspect).to(HeadType());
    return cached;
  }

  // Sin/cos embedding of the DPT uv grid for a [C, h, w] map of an image with aspect W/H, scaled by 0.1.
  // Like the reference: coordinates in the model dtype, the embedding rounded to fp32.
  // The position embeddings a DPT head reads (UvEmbedding's cache), computed now.
  void PrepareUvEmbeddings(const DptWeights& d, int64_t h, int64_t wd, int64_t H, int64_t W) {
    const double aspect = static_cast<double>(W) / H;
    for (int i = 0; i < 4; ++i) UvEmbedding(d.project_w[i].size(0), h, wd, aspect);
    UvEmbedding(w.at(d.prefix + "scratch.output_conv1.weight").size(0), h * config.patch_size, wd * config.patch_size, aspect);
  }

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
    return ConvBias(out, w.at(p + "out_conv.weight"), w.at(p + "out_conv.bias"));
  }

  // A DPT head over the tapped aggregator outputs ([F, P, 2C] each). Returns the raw [F, out, H, W] maps.
  Tensor Dpt(const DptWeights& d, const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W) {
    const double aspect = static_cast<double>(W) / H;
    const int64_t n_special = config.special_tokens();
    std::vector<Tensor> feats;
    for (int i = 0; i < 4; ++i) {
      Tensor x = taps[i].narrow(1, n_special, h * wd);
      x = LayerNorm(x, d.norm_w, d.norm_b, 1e-5);
      if (options.bf16_heads)  // [F, h*w, C] is already channels-last [F, C, h, w]
        x = x.to(HeadType()).view({x.size(0), h, wd, x.size(2)}).permute({0, 3, 1, 2});
      else
        x = x.transpose(1, 2).reshape({x.size(0), x.size(2), h, wd});
      x = ConvBias(x, d.project_w[i], d.project_b[i], 1, 0, /*relu=*/false, UvEmbedding(d.project_w[i].size(0), h, wd, aspect));
      if (i == 0) x = at::conv_transpose2d(x, d.resize0_w, d.resize0_b, 4);
      if (i == 1) x = at::conv_transpose2d(x, d.resize1_w, d.resize1_b, 2);
      if (i == 3) x = ConvBias(x, d.resize3_w, d.resize3_b, 2, 1);
      feats.push_back(at::conv2d(x, d.layer_rn[i], {}, 1, 1));
    }
    Tensor out = Fusion(d, 4, feats[3], nullptr, feats[2].size(2), feats[2].size(3));
    out = Fusion(d, 3, out, &feats[2], feats[1].size(2), feats[1].size(3));
    out = Fusion(d, 2, out, &feats[1], feats[0].size(2), feats[0].size(3));
    out = Fusion(d, 1, out, &feats[0], 2 * feats[0].size(2), 2 * feats[0].size(3));
    const std::string s = d.prefix + "scratch.";
    out = ConvBias(out, w.at(s + "output_conv1.weight"), w.at(s + "output_conv1.bias"), 1, 1);
    out = Bilinear(out, h * config.patch_size, wd * config.patch_size);
    out = out + UvEmbedding(out.size(1), out.size(2), out.size(3), aspect);
    out = ConvBias(out, w.at(s + "output_conv2.0.weight"), w.at(s + "output_conv2.0.bias"), 1, 1, /*relu=*/true);
    return at::conv2d(out, w.at(s + "output_conv2.2.weight"), w.at(s + "output_conv2.2.bias")).to(topts.dtype());
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
      const Tensor cond = Linear(pose_in, w.at(p + "embed_pose.weight"), w.at(p + "embed_pose.bias"));
      const auto mod = Linear(at::silu(cond), w.at(p + "poseLN_modulation.1.weight"), w.at(p + "poseLN_modulation.1.bias")).chunk(3, -1);
      Tensor x = mod[2] * (tok_normed * (1 + mod[1]) + mod[0]) + tok;
      for (size_t b = 0; b < trunk_blocks.size(); ++b) x = trunk(b, x);
      x = LayerNorm(x, w.at(p + "trunk_norm.weight"), w.at(p + "trunk_norm.bias"), 1e-5);
      const Tensor delta = Linear(at::gelu(Linear(x, w.at(p + "pose_branch.fc1.weight"), w.at(p + "pose_branch.fc1.bias"))),
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
    DropGraphsUnlessSize(H, W);
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
    const RopeTables rope_seq{rope.cos.repeat({S, 1}), rope.sin.repeat({S, 1})};
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

  // Whether Segment computes each global layer's k and v straight into its cache's rows
  // (LayerKvCache::FrameRows, no copy): in eager steps and in the whole-step graph (steady caches),
  // not in the segment graphs, which are replayed while the caches fill and their rows move.
  bool kv_into_caches = false;

  // Segment i of the aggregator between two cache attentions: the rest of global block i - 1 (from
  // its attention output attn[i - 1]), then frame block i and the q/k/v of global block i.
  // Each block's last residual update is added by the next block's first LayerNorm (Pending).
  void Segment(int i, const Tensor& x0) {
    const Pending in = i > 0 ? BlockPostPending(global_blocks[i - 1], frame_out[i - 1], attn[i - 1]) : Pending{x0};
    if (i == config.depth) {
      if (needed[i - 1]) outputs[i - 1] = at::cat({frame_out[i - 1], Resolve(in)}, -1);
      return;
    }
    Tensor x;
    const Pending frame = SelfBlock(frame_blocks[i], in, &rope, &x);
    if (i > 0 && needed[i - 1]) outputs[i - 1] = at::cat({frame_out[i - 1], x}, -1);
    const std::pair<Tensor, Tensor> rows =
        kv_into_caches ? global_caches[i]->FrameRows(x0.size(0), global_blocks[i].qkv_w.options()) : std::pair<Tensor, Tensor>{};
    std::tie(q[i], k[i], v[i]) = BlockPre(global_blocks[i], frame, &rope, &frame_out[i], rows);
  }

  struct HeadsOut {
    Tensor depth, depth_conf, world_points, world_points_conf;
  };

  // The DPT heads with their activations over taps [F, P, 2C] into maps [F, H, W, c]: the depth
  // head's (depth, its confidence) and the point head's (points, their confidence).
  void DepthMaps(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W, HeadsOut& out) {
    const Tensor depth_raw = Dpt(depth_head, taps, h, wd, H, W).permute({0, 2, 3, 1});  // [F, H, W, 2]
    out.depth = at::exp(depth_raw.narrow(3, 0, 1));
    out.depth_conf = 1 + at::exp(depth_raw.select(3, 1));
  }
  void PointMaps(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W, HeadsOut& out) {
    const Tensor pts_raw = Dpt(point_head, taps, h, wd, H, W).permute({0, 2, 3, 1});  // [F, H, W, 4]
    const Tensor xyz = pts_raw.narrow(3, 0, 3);
    out.world_points = at::sign(xyz) * at::expm1(at::abs(xyz));
    out.world_points_conf = 1 + at::exp(pts_raw.select(3, 3));
  }

  HeadsOut DptHeads(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W) {
    HeadsOut out;
    DepthMaps(taps, h, wd, H, W, out);
    PointMaps(taps, h, wd, H, W, out);
    return out;
  }

  // The frame's DPT heads from the aggregator's taps. parallel (CUDA graphs): the point head on a
  // second stream beside the depth head (ParallelDptHeads, cuda_graphs.cc).
  HeadsOut Heads(int64_t h, int64_t wd, int64_t H, int64_t W, bool parallel = false) {
    std::vector<Tensor> taps;
    for (int idx : config.dpt.intermediate_layer_idx) taps.push_back(outputs[idx].unsqueeze(0));
    HeadsOut out = parallel ? ParallelDptHeads(taps, h, wd, H, W) : DptHeads(taps, h, wd, H, W);
    for (Tensor* t : {&out.depth, &out.depth_conf, &out.world_points, &out.world_points_conf}) *t = (*t)[0];
    return out;
  }
  HeadsOut ParallelDptHeads(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H, int64_t W);

  // How RunStep reaches the global caches: their Forward, or (the whole-step graph) nothing, the
  // graph having run it: kReplayed counts the replay on each cache, kCaptured (the frame whose
  // capture ran the caches' host side) does not.
  enum class CacheCalls { kForward, kReplayed, kCaptured };

  // One step, eager or replayed from graphs: the embedding, per layer the segment and the cache
  // attention (into attn[i], in place when graphs read it), the camera head, the DPT heads. With
  // static buffers the outputs are copies, since the next replay overwrites them.
  StepOutput RunStep(const std::function<void()>& embed, const std::function<void(int)>& segment,
                     const std::function<Tensor(const Tensor&)>& camera, const std::function<HeadsOut()>& heads, bool static_buffers,
                     CacheCalls caches = CacheCalls::kForward) {
    auto take = [&](const Tensor& t) { return static_buffers ? t.clone() : t; };
    Lap(nullptr);
    embed();
    Lap(&timings.patch_embed);
    for (int i = 0; i <= config.depth; ++i) {
      segment(i);
      Lap(&timings.blocks);
      if (i < config.depth && caches == CacheCalls::kReplayed) global_caches[i]->Replayed();
      if (i < config.depth && caches == CacheCalls::kForward) {
        const Tensor o = global_caches[i]->Forward(q[i], k[i], v[i]);
        if (static_buffers) attn[i].copy_(o);
        else attn[i] = o;
        Lap(&timings.kv_attention);
        timings.cache_maintenance += global_caches[i]->maintenance_ms();
      }
    }
    if (caches == CacheCalls::kForward) JoinCaches();
    for (auto& c : global_caches) c->StepEnded();  // (a paged cache's counts to the host, after the step's work)
    ++frames;
    StepOutput out;
    // (the camera head appends to the trunk caches; bytes are sampled after it)
    out.tokens_last = take(outputs[config.depth - 1]);
    camera_replayed = false;
    out.pose_enc = camera(out.tokens_last.narrow(0, 0, 1));
    out.camera_graph = camera_replayed;
    out.step_graph = caches != CacheCalls::kForward;
    out.step_graph_captured = caches == CacheCalls::kCaptured;
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

  // The step waits for the global caches' maintenance at the end of the aggregator: each layer's
  // pruning and storing ran on a second stream beside the layers after it.
  void JoinCaches() {
    for (auto& c : global_caches) c->Join();
  }

  // CUDA graphs: cuda_graphs.cc in CUDA builds, no_cuda_graphs.cc elsewhere.
  struct Graphs;
  std::shared_ptr<Graphs> graphs;
  bool graphs_failed = false;
  bool step_graph_failed = false;  // the whole-step graph could not be captured: segments only
  std::pair<int64_t, int64_t> last_grid{-1, -1};  // the patch grid of the last frame
  bool size_repeats = false;  // this frame has the last one's size (its caches' calls repeat the last ones)
  bool camera_replayed = false;  // the last step's camera head came from its graph
  // Drops graphs captured for another frame size (before the layout tensors change).
  void DropGraphsUnlessSize(int64_t H, int64_t W);
  // The step with graphs (capturing them first when needed). Returns false to run eagerly instead.
  bool GraphStep(const Tensor& img, int64_t h, int64_t wd, int64_t H, int64_t W, bool defer_pose, StepOutput& out);
  void Capture(const Tensor& img, int64_t h, int64_t wd, int64_t H, int64_t W);
  // The camera head with graphs: replayed once every trunk cache is graph_ready, else eager.
  Tensor GraphCamera(const Tensor& camera_token);
  // The aggregator with its cache attentions as one graph and the DPT heads as another (the
  // camera head's replay runs beside them on a second stream), once every global
  // cache is graph_ready; false when the capture failed (graphs dropped: this frame runs eagerly).
  bool CaptureStep(int64_t h, int64_t wd, int64_t H, int64_t W);


  StepOutput Step(const Tensor& image_in, bool defer_pose = false) {
    if (image_in.dim() != 3 || image_in.size(0) != 3)
      throw Error("model input must be [3, H, W] RGB, got " + std::string(c10::str(image_in.sizes())));
    const int64_t H = image_in.size(1), W = image_in.size(2), ps = config.patch_size;
    if (H % ps != 0 || W % ps != 0 || H == 0 || W == 0)
      throw Error("model input " + std::to_string(W) + "x" + std::to_string(H) + " is not a multiple of the patch size " + std::to_string(ps));
    const int64_t h = H / ps, wd = W / ps;
    // A step that threw left its caches' maintenance unjoined, and that work may still read the
    // segment graphs' static q, k, v, which the next replay overwrites in place (a capture would
    // also fail on its pending events): join before anything of this frame runs. (Nothing is
    // pending otherwise: the last step joined at the end of its aggregator.)
    JoinCaches();
    bytes_before_step = Bytes();
    DropGraphsUnlessSize(H, W);
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
    size_repeats = frames > 0 && last_grid == std::make_pair(h, wd);
    last_grid = {h, wd};
    timings = StageTimings{};
    StepOutput out;
    if (topts.device().is_cuda() && GraphStep(img, h, wd, H, W, defer_pose, out)) return out;
    kv_into_caches = true;
    Tensor x;
    return RunStep([&] { x = Embed(img, frames == 0 ? 0 : 1); }, [&](int i) { Segment(i, x); },
                   [&](const Tensor& token) { return CameraHead(token); }, [&] { return Heads(h, wd, H, W); }, /*static_buffers=*/false);
  }
};

}  // namespace streamrecon::models
