// The global-attention KV cache behind a small interface: one LayerKvCache per attention layer
// (aggregator global blocks and camera-head trunk blocks), made by MakeLayerKvCache from the
// options and the device. Keys are stored after k_norm and RoPE; positions repeat every frame, so
// they never need re-rotation.
//
// Per frame a layer runs Forward(q, k, v): the current frame attends to every kept token plus
// itself; then the kept tokens are pruned to leave room for the current frame (the first frame
// and the current frame are protected); then the current frame is stored (quantized once, if the
// format says so). Stored bytes never exceed the layer's capacity, also while appending.
//
// Where things live (core/kv/): options.h (what a cache is asked to be), format.h (the vocabulary
// and the page layout), quantizer.h (the quantiser, host and device), paged_kv.h (page tensors and
// the CPU reference of quantization), policy.h (scores and selection), budget.h (capacities and
// the budget planner), backend.h + layer_cache.cc (the one cache core over a backend),
// reference_backend.cc and cuda_backend.cc (the two backends), factory.cc (the choice), and
// slot_cache.cc (the camera trunk's fixed-slot cache, one token per call, graph-replayable).
#pragma once

#include <memory>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "core/kv/options.h"

namespace streamrecon {

// One attention layer's cache.
class LayerKvCache {
 public:
  virtual ~LayerKvCache() = default;

  // q, k, v: [H, N, D] for the current frame's N tokens (q, k after norm and RoPE).
  // Returns softmax(q K^T / sqrt(D)) V over every kept token plus the current frame (kept tokens
  // first, in stream order): [H, N, D] in q's dtype. Then prunes and stores the current frame.
  virtual at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) = 0;

  // The kept keys and values as attention sees them (dequantized, norms folded in, rotated
  // space for OScaR): [H, T, D] each.
  virtual std::pair<at::Tensor, at::Tensor> Materialize() const = 0;

  virtual void SetCapacity(const LayerCapacity& capacity) = 0;
  virtual int64_t tokens() const = 0;  // tokens held
  // Tokens held when the last Forward began (after the frame before it; 0 before any frame): what
  // a caller that has already queued the next frame reports for the frame it completes. (A paged
  // cache on a GPU knows its token count once a copy of its counts has landed: this waits for the
  // frame before the last one at most. Where no copy of that frame was made, e.g. after a failed
  // graph capture, it gives tokens() instead.) Both this and tokens() may wait for the device.
  virtual int64_t tokens_before_last_frame() const { return tokens(); }
  virtual int64_t bytes() const = 0;   // bytes held (codes, params, norms, page table)
  virtual QuantStats quant_stats() const = 0;  // with options.quant_stats, else zeros
  // With options.measure: milliseconds the last Forward spent pruning and storing (else 0).
  virtual double maintenance_ms() const = 0;
  virtual void Clear() = 0;
  virtual const char* backend() const = 0;  // "reference", "cuda" or "slots"

  // Whether the next Forward does exactly the host work of the last one and reads no host data,
  // so that a CUDA graph captured over one call can stand for it (fixed-slot caches when full).
  virtual bool graph_ready() const { return false; }
  // Whether a CUDA graph captured anew over the next Forward could stand for the ones after it:
  // graph_ready(), or a steady cache that only needs its next call's host choices made again (a
  // paged cache whose count drifted below the rows its attention took as certain). Changes nothing.
  virtual bool CanRecapture() const { return graph_ready(); }
  // Called on every cache once all of them CanRecapture, before the capture: makes the next call's
  // host choices again where needed (a paged cache chooses its certain rows again when its count
  // fell below them or lies within half the margin above them), so that the capture and its
  // replays attend the new ones. Returns whether the capture can go ahead.
  virtual bool PrepareCapture() { return graph_ready(); }
  // Tests only: a paged cache's rows taken as certain, read and set (set above its count, they
  // are as if the count had drifted below them: graph_ready() is then false until PrepareCapture
  // or a Forward chooses them again). Others: 0, and nothing set.
  virtual int64_t certain_rows_for_testing() const { return 0; }
  virtual void SetCertainRowsForTesting(int64_t /*rows*/) {}
  // The host side of a Forward that a graph replay performed (only when graph_ready()).
  virtual void Replayed() {}
  // Called once the step that ran this cache's Forward (eagerly, or in a graph's capture or
  // replay) is queued on the current stream, its maintenance joined: a cache whose host copy of
  // what it holds lags the device (a paged cache on a GPU, whose kept pages' token counts change
  // there) queues that copy here, so that tokens() and tokens_before_last_frame() need not wait.
  virtual void StepEnded() {}
  // Orders the current stream after the pruning and storing that the last Forward left running on
  // a second stream (KernelOptions::background_maintenance; a no-op when none is pending). Forward
  // and Materialize join by themselves; a caller that captures CUDA graphs joins every cache
  // before its capture ends, since a capture must end on its own stream. Returns whether there was
  // such work to wait for.
  virtual bool Join() { return false; }
  // After a failed CUDA graph capture that ran Forward: forgets the maintenance recorded in it
  // (a failed capture queued nothing), without waiting on its events, which are the capture's.
  virtual void DiscardPending() {}
  // Where the next Forward keeps the current frame's n keys and values while it attends: [H, n, D]
  // views of its rows in `options`' dtype, for a caller that computes k and v straight into them
  // (Forward then copies nothing); undefined where the cache keeps the frame elsewhere (a quantized
  // or rotated format, another dtype) or before its first frame. Valid until the next Forward; the
  // views move when the cache's rows do (e.g. while it fills), so a CUDA graph may hold them only
  // while the cache is graph_ready.
  virtual std::pair<at::Tensor, at::Tensor> FrameRows(int64_t n, const at::TensorOptions& options) {
    (void)n, (void)options;
    return {};
  }
};

// Which backend serves a cache.
enum class KvBackendKind {
  kAuto,       // CUDA for a CUDA device and a format other than fp32; else the reference
  kReference,  // torch operations on the tensors' device; quantization by the CPU reference
  kCuda,       // the CUDA kernels (head dimension 64)
};

// A layer cache for `device`. Throws OptionError when the options are invalid or the backend is
// not in this build (kCuda without the CUDA kernels).
std::unique_ptr<LayerKvCache> MakeLayerKvCache(const KvCacheOptions& options, c10::Device device = c10::kCPU,
                                               KvBackendKind kind = KvBackendKind::kAuto);

// A cache of fixed capacity for layers that store one token per call (the camera-head trunk):
// dense rows (format dense or bf16) in slots allocated at the first call, evicted on the device by
// the policy, the same tokens as the reference cache keeps; graph_ready once full (except for the
// random policy, whose draws are made on the host). Needs a pruning policy and a bounded capacity.
std::unique_ptr<LayerKvCache> MakeSlotKvCache(const KvCacheOptions& options);

// Whether this build has the CUDA backend and a CUDA device is visible.
bool CudaKvAvailable();

// Waits for the work queued on `device` (a no-op on the CPU); for timings.
void SynchronizeDevice(c10::Device device);

}  // namespace streamrecon
