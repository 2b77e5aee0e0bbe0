// The CUDA backend: attention, scores and page quantization by the kernels of kernels/ (through
// their LibTorch-facing entries, kernels/kv_ops.h). Dense rows are bf16; queries and keys are
// rotated and scored in float. Capacity, pruning and compaction are the core's (layer_cache.cc).
#include <ATen/ATen.h>

#include "core/check.h"
#include "core/kv/backend.h"
#include "kernels/kv_ops.h"

namespace streamrecon {
namespace {

class CudaBackend final : public KvBackend {
 public:
  explicit CudaBackend(const KvCacheOptions& options) : options_(options) {
    SR_CHECK(!(IsQuantized(options.format) && options.first_frame_bf16), OptionError,
             "first_frame_bf16 is not supported by the CUDA cache yet (use the reference cache, on the CPU)");
  }

  const char* name() const override { return "cuda"; }
  // Attend's last_rows_ repeats in a steady cache, so the replayed call is the captured one. (The
  // fused kernel path sizes its launch from the host's page counts: not replayable.)
  bool replayable() const override { return Path() != AttentionPath::kFused; }
  // (its scores, selection, moves and page writes are the kernels of kernels/; no cuBLAS)
  bool maintenance_beside() const override { return true; }

  void CheckLayer(int heads, int head_dim) const override {
    SR_CHECK_EQ(OptionError, head_dim, kernels::kKernelHeadDim, "the CUDA KV cache's head dimension");
    if (IsQuantized(options_.format)) {
      SR_CHECK_LE(OptionError, heads, 16, "the CUDA KV cache's heads per layer");
      SR_CHECK(options_.k_group == 16 || options_.k_group == 32, OptionError,
               "the CUDA KV cache stores pages of 16 or 32 tokens (k_group), got " << options_.k_group);
    }
  }

  at::ScalarType WorkType(at::ScalarType) const override { return at::kFloat; }
  at::ScalarType DenseType(CacheFormat, at::ScalarType) const override { return at::kBFloat16; }

  at::Tensor Rotate(const at::Tensor& x, const at::Tensor& hadamard) const override {
    if (x.size(-1) != kernels::kKernelHeadDim || hadamard.scalar_type() != at::kFloat) return KvBackend::Rotate(x, hadamard);
    return kernels::RotateCuda(x);  // one kernel where the cast and the matrix product took several
  }

  // One kernel for both, where rotating each in float and casting them for the attention took
  // four: q in float for the scores and in bf16, k in bf16 (the append kernel rotates k itself).
  RotatedFrame RotateFrame(const at::Tensor& q, const at::Tensor& k, const at::Tensor& hadamard) const override {
    const bool io = q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 && q.is_cuda() && k.is_cuda();
    if (!io || q.size(-1) != kernels::kKernelHeadDim || k.size(-1) != kernels::kKernelHeadDim || hadamard.scalar_type() != at::kFloat)
      return KvBackend::RotateFrame(q, k, hadamard);
    const kernels::RotatedQk r = kernels::RotateQkCuda(q, k);
    return {r.q_f32, at::Tensor(), r.q_bf16, r.k_bf16};
  }

  // One kernel where the cast, the means and the cat take five (float or bf16 queries of 64
  // channels; others as the base class).
  at::Tensor Pooled(const at::Tensor& q_r, int pool_size, int special_tokens) const override {
    const bool io = q_r.scalar_type() == at::kFloat || q_r.scalar_type() == at::kBFloat16;
    if (!q_r.is_cuda() || !io || q_r.size(2) != kernels::kKernelHeadDim) return KvBackend::Pooled(q_r, pool_size, special_tokens);
    return kernels::PooledQueriesCuda(q_r, pool_size, special_tokens);
  }

  at::Tensor Attend(const at::Tensor& q_r, const KvView& kept, const at::Tensor& k_r, const at::Tensor& v_r) override {
    if (kept.current_rows > 0 && kept.page_count == 0 && Path() != AttentionPath::kFused) {
      // The cache and the frame as one block of rows. A length seen at the previous frame (a full,
      // evicting cache) gets one attention call; changing lengths go in cuDNN-friendly buckets.
      const int64_t rows = kept.dense_tokens + kept.current_rows;
      const bool steady = rows == last_rows_;
      last_rows_ = rows;
      if (Path() == AttentionPath::kInt8)
        return kernels::Int8AttentionCuda(Bf16(q_r), kernels::QuantizeInt8RowsCuda(kept.dense_k, kept.dense_v, rows));
      return kernels::AttentionRowsCuda(Bf16(q_r), kept.dense_k, kept.dense_v, rows, steady, options_.kernels, &lengths_);
    }
    const at::Tensor dense_k = kept.dense_tokens > 0 ? kept.dense_k : at::Tensor();
    const at::Tensor dense_v = kept.dense_tokens > 0 ? kept.dense_v : at::Tensor();
    return kernels::AttentionCuda(Bf16(q_r), dense_k, dense_v, kept.dense_tokens, kept.page_count > 0 ? kept.pages : nullptr,
                                  kept.page_count, Bf16(k_r), Bf16(v_r), 0, Path(), kept.valid, options_.kernels, &lengths_,
                                  kept.certain_rows);
  }

  at::Tensor Scores(const at::Tensor& q_bar, const KvView& kept, int64_t first_token, int64_t first_page) override {
    if (kept.page_count == 0) {
      const int heads = static_cast<int>(kept.dense_k.size(0));
      return kernels::TokenScoresCuda(q_bar, kept.dense_k, kept.dense_tokens, nullptr, 0, heads)
          .narrow(0, first_token, kept.dense_tokens - first_token);
    }
    return kernels::TokenScoresCuda(q_bar, {}, 0, kept.pages, kept.page_count, kept.pages->layout.heads)
        .narrow(0, first_page, kept.page_count - first_page);
  }

  void StorePages(const at::Tensor& k, const at::Tensor& v, const at::Tensor&, const at::Tensor&, int32_t frame, PagedKv& store,
                  int64_t at, const at::Tensor& frame_counter) override {
    // The kernel rotates and norm-scales the keys itself (from the model's keys in bf16).
    kernels::AppendPagesCuda(Bf16(k), Bf16(v), store.layout.norms, options_.v_hadamard, frame, store, at, options_.kernels,
                             frame_counter);
  }

  // The ragged path (the default) and the 8-bit one read the counts on the device; the others size
  // their rows from the host's counts (Scores reads every slot and needs none).
  bool NeedsPageCounts(const KvView& kept, int64_t current_tokens) const override {
    return kept.page_count > 0 && Path() != AttentionPath::kInt8 &&
           !kernels::RaggedAttends(Path(), kept.pages, kept.page_count, kept.dense_tokens, current_tokens, options_.kernels);
  }

 private:
  static at::Tensor Bf16(const at::Tensor& t) { return t.to(at::kBFloat16).contiguous(); }

  // The cache's length changes from frame to frame: by default the ragged dequantize-once path
  // (pages; AttentionCuda sends what it does not serve to the bucketed one, as it does dense rows).
  AttentionPath Path() const {
    return options_.kernels.attention == AttentionPath::kAuto ? AttentionPath::kDequantRagged : options_.kernels.attention;
  }

  KvCacheOptions options_;
  int64_t last_rows_ = -1;  // the rows attended at the previous frame (AttentionRowsCuda)
  kernels::RecurringLengths lengths_;  // the bucketed lengths this cache attended, and how often
};

}  // namespace

std::unique_ptr<KvBackend> MakeCudaBackend(const KvCacheOptions& options) { return std::make_unique<CudaBackend>(options); }

}  // namespace streamrecon
