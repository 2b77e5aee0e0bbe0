// The small interface between the one cache core (layer_cache.cc: capacity, pruning, compaction,
// growth, the host mirror of page counts) and what differs per device: how attention, scores and
// page quantization are computed. Two implementations: the reference (torch operations on the
// tensors' device, quantization by the CPU reference) and CUDA (the kernels of kernels/).
#pragma once

#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/kv/cache.h"
#include "core/kv/paged_kv.h"

namespace streamrecon {

// What a backend sees of a layer's kept tokens, in stream order: dense rows first (the whole
// cache for dense formats, the bf16 first frame for a quantized one), then the pages.
struct KvView {
  at::Tensor dense_k, dense_v;  // [H, rows allocated, D]
  int64_t dense_tokens = 0;     // rows in use
  const PagedKv* pages = nullptr;  // page storage (quantized formats), with spare pages
  int64_t page_count = 0;          // pages in use
  const std::vector<int32_t>* valid = nullptr;  // host mirror of the pages' valid tokens
  // In Attend: the current frame's k_r, v_r are also rows [dense_tokens, dense_tokens +
  // current_rows) of dense_k/dense_v (dense formats), so the cache and the frame can be attended
  // as one block of rows. 0 when they are not.
  int64_t current_rows = 0;
  // Pages only (no dense rows): how many of the rows [current frame; the pages' valid slots] the
  // host knows to exist (a multiple of kCertainRowsBucket, below the current frame plus a lower
  // bound of the pages' valid tokens; 0: none), for a backend that attends them without the
  // host's counts (backends that read the counts ignore it).
  int64_t certain_rows = 0;
};

// The granularity of KvView::certain_rows: each distinct count is a cuDNN plan of the CUDA backend
// (60-90 ms to build). 1024 instead of 2048 left fewer rows to the slower flash attention (call
// 116: 17.2 against 17.8 ms median kivi4 frames) but counts chosen nearer the wobbling token count
// fell below it more often, and each time the whole-step graph was captured again (55 captures in
// 2000 frames, p99 76 ms). Since call 131 cuDNN takes a bucket past the certain rows too (those
// past the device's count zeroed and taken out of its softmax), and flash only what lies beyond.
inline constexpr int64_t kCertainRowsBucket = 2048;

class KvBackend {
 public:
  virtual ~KvBackend() = default;
  virtual const char* name() const = 0;
  // Refuses a layer shape the backend cannot serve (OptionError), at the first frame.
  virtual void CheckLayer(int heads, int head_dim) const = 0;
  // The dtype queries and keys are rotated, attended and scored in, for queries of dtype q.
  virtual at::ScalarType WorkType(at::ScalarType q) const = 0;
  // The dtype of dense rows for a dense format (fp32 keeps the keys' own dtype `k` where it can).
  virtual at::ScalarType DenseType(CacheFormat format, at::ScalarType k) const = 0;
  // OScaR's rotation x H of a tensor [..., D] (H: the normalised Hadamard matrix `hadamard`, in
  // the work type), in the work type.
  virtual at::Tensor Rotate(const at::Tensor& x, const at::Tensor& hadamard) const;  // (reference_backend.cc)
  // A frame's q and k rotated for OScaR: q_r in the work type (the scores' pooled queries), k_r in
  // the work type for StorePages (undefined where this backend's StorePages rotates k itself), and
  // the queries and keys as this backend's Attend takes them (by default q_r and k_r themselves).
  struct RotatedFrame {
    at::Tensor q_r, k_r, q_attend, k_attend;
  };
  virtual RotatedFrame RotateFrame(const at::Tensor& q, const at::Tensor& k, const at::Tensor& hadamard) const;  // (reference_backend.cc)
  // XStreamVGGT's pooled queries (policy.h's PooledQueries) of the frame's q_r [H, N, D], in the
  // work type: [M, D].
  virtual at::Tensor Pooled(const at::Tensor& q_r, int pool_size, int special_tokens) const;  // (reference_backend.cc)
  // Softmax attention of q_r over the kept tokens then the current frame (k_r, v_r): all in the
  // work type, rotated for OScaR, except that q_r and k_r are RotateFrame's q_attend and k_attend
  // there (in the dtype this backend's Attend takes: bf16 for the CUDA one). Returns [H, N, D].
  virtual at::Tensor Attend(const at::Tensor& q_r, const KvView& kept, const at::Tensor& k_r, const at::Tensor& v_r) = 0;
  // XStreamVGGT scores (pooled queries q_bar [M, D] in the work type) of the kept tokens after the
  // first frame: dense rows from first_token on -> [rows - first_token]; or pages from first_page
  // on -> [pages - first_page, G] with -inf on padding slots. Called right after Attend.
  virtual at::Tensor Scores(const at::Tensor& q_bar, const KvView& kept, int64_t first_token, int64_t first_page) = 0;
  // Quantizes the current frame into pages [at, at + ceil(N / G)) of store (which has room):
  // k, v as given to Forward; k_r, v_r in the work type and rotated for OScaR (k_r as
  // RotateFrame left it: undefined where this backend rotates k itself).
  // The pages' frame number is `frame`, or (frame_counter: int32 [1] on the device, which a CUDA
  // graph's replays advance) the counter's value when the store runs.
  virtual void StorePages(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_r, const at::Tensor& v_r, int32_t frame,
                          PagedKv& store, int64_t at, const at::Tensor& frame_counter) = 0;
  // Whether Attend and Scores read the host's copy of the pages' valid counts (KvView::valid) for
  // this view and a current frame of `current_tokens` tokens; where they do not, the cache lets that
  // copy lag the device (no wait for it in Forward).
  virtual bool NeedsPageCounts(const KvView& kept, int64_t current_tokens) const {
    (void)kept, (void)current_tokens;
    return true;
  }
  // Whether a CUDA graph captured over a steady dense Forward can stand for the next ones: every
  // call reads no host data and keeps no host state a replay would skip (LayerKvCache::graph_ready).
  virtual bool replayable() const { return false; }
  // Whether pruning and storing may run on a second stream beside the caller's (background
  // maintenance): they make no library calls with per-stream workspaces (cuBLAS), which a pool
  // stream might share with CUDA graphs replaying at the same time.
  virtual bool maintenance_beside() const { return false; }
};

std::unique_ptr<KvBackend> MakeReferenceBackend(const KvCacheOptions& options);

// TopByScore (policy.h) on the scores' device: on a GPU by one select kernel where the sorts take a
// dozen (factory.cc, which knows whether this build has it).
at::Tensor TopOnDevice(const at::Tensor& scores, int64_t k);
// Only in builds with the CUDA kernels (factory.cc knows which).
std::unique_ptr<KvBackend> MakeCudaBackend(const KvCacheOptions& options);

// The cache core over a backend.
std::unique_ptr<LayerKvCache> MakeCacheOver(std::unique_ptr<KvBackend> backend, const KvCacheOptions& options);

}  // namespace streamrecon
