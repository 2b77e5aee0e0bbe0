// LibTorch-facing side of the KV-cache kernels (the only file here that touches tensors).
#include "kernels/kv_ops.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include "core/errors.h"
#include "core/kv/backend.h"  // (kCertainRowsBucket)
#include "core/kv/policy.h"
#include "kernels/check_cuda.h"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

std::string Describe(const at::Tensor& t) {
  return t.defined() ? std::string(c10::toString(t.scalar_type())) + " " + c10::str(t.sizes()) + (t.is_cuda() ? " cuda" : " cpu") +
                           (t.is_contiguous() ? "" : " non-contiguous")
                     : std::string("undefined");
}

void CheckBf16(const at::Tensor& t, const char* name, int64_t heads = -1) {
  if (!t.defined() || !t.is_cuda() || t.scalar_type() != at::kBFloat16 || t.dim() != 3 || t.size(2) != 64 || !t.is_contiguous())
    throw Error(std::string(name) + ": expected a contiguous bf16 CUDA tensor [H, N, 64], got " + Describe(t));
  if (heads >= 0 && t.size(0) != heads) throw Error(std::string(name) + ": expected " + std::to_string(heads) + " heads");
}

PagesView View(const PagedKv& p, int64_t count) {
  PagesView v;
  v.k_codes = p.k_codes.data_ptr<uint8_t>();
  v.k_params = reinterpret_cast<const uint32_t*>(p.k_params.data_ptr<int16_t>());
  v.v_codes = p.v_codes.data_ptr<uint8_t>();
  v.v_params = reinterpret_cast<const uint32_t*>(p.v_params.data_ptr<int16_t>());
  v.norms = p.layout.norms ? p.norms.data_ptr<float>() : nullptr;
  v.meta = p.meta.data_ptr<int32_t>();
  v.pages = static_cast<int>(count);
  v.slots = p.layout.slots;
  v.v_group = p.layout.v_group;
  return v;
}

void CheckPages(const PagedKv& p) {
  for (const at::Tensor* t : {&p.k_codes, &p.k_params, &p.v_codes, &p.v_params, &p.norms, &p.meta})
    if (!t->defined() || !t->is_cuda() || !t->is_contiguous()) throw Error("page store: expected contiguous CUDA tensors");
  if (p.layout.head_dim != 64) throw Error("CUDA KV kernels support head dimension 64, got " + std::to_string(p.layout.head_dim));
}

// The page store and queries of `heads` heads, checked together.
void CheckPagesFor(const PagedKv& p, int64_t heads) {
  CheckPages(p);
  if (p.layout.heads != heads) throw Error("page store has " + std::to_string(p.layout.heads) + " heads, queries have " + std::to_string(heads));
}

}  // namespace

void AppendPagesCuda(const at::Tensor& k, const at::Tensor& v, bool oscar, bool v_hadamard, int frame, PagedKv& store,
                     int64_t first_page, const KernelOptions& options, const at::Tensor& frame_counter) {
  options.Check();
  CheckBf16(k, "keys");
  CheckBf16(v, "values", k.size(0));
  CheckPages(store);
  const PageLayout& L = store.layout;
  if ((L.slots != 16 && L.slots != 32) || k.size(0) > 16)
    throw Error("CUDA append supports pages of 16 or 32 tokens (--k-group) and up to 16 heads; got " + std::to_string(L.slots) +
                " tokens and " + std::to_string(k.size(0)) + " heads");
  const int64_t pages = (k.size(1) + L.slots - 1) / L.slots;
  if (first_page + pages > store.meta.size(0))
    throw Error("page store has room for " + std::to_string(store.meta.size(0)) + " pages, append needs " + std::to_string(first_page + pages));
  // The kernels read rows in 16-byte pieces: a view starting mid-row is copied first.
  auto aligned = [](const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 ? t : t.clone(); };
  const at::Tensor ka = aligned(k), va = aligned(v);
  AppendParams p;
  p.k = reinterpret_cast<const uint16_t*>(ka.data_ptr<at::BFloat16>());
  p.v = reinterpret_cast<const uint16_t*>(va.data_ptr<at::BFloat16>());
  p.heads = static_cast<int>(k.size(0));
  p.tokens = static_cast<int>(k.size(1));
  p.head_dim = 64;
  p.bits = L.bits;
  p.oscar = oscar;
  p.v_hadamard = v_hadamard;
  p.frame = frame;
  if (frame_counter.defined()) {
    if (!frame_counter.is_cuda() || frame_counter.scalar_type() != at::kInt || frame_counter.numel() != 1)
      throw Error("KV append: expected the frame counter as int32 [1] on the GPU, got " + Describe(frame_counter));
    p.frame_counter = frame_counter.data_ptr<int32_t>();
  }
  p.k_codes = store.k_codes.data_ptr<uint8_t>();
  p.k_params = reinterpret_cast<uint32_t*>(store.k_params.data_ptr<int16_t>());
  p.v_codes = store.v_codes.data_ptr<uint8_t>();
  p.v_params = reinterpret_cast<uint32_t*>(store.v_params.data_ptr<int16_t>());
  p.norms = store.norms.data_ptr<float>();
  p.meta = store.meta.data_ptr<int32_t>();
  p.first_page = static_cast<int>(first_page);
  p.slots = L.slots;
  p.v_group = L.v_group;
  p.variant = options.append_variant > 0 ? options.append_variant : 2;
  p.heads_per_block = options.append_heads_per_block;
  CheckCuda(LaunchAppendPages(p, at::cuda::getCurrentCUDAStream()), "KV append kernel");
}

namespace {

// The workspaces of an attention split over the keys (p.splits > 1): partial outputs [splits, H,
// Nq, 64] (float for AttentionParams, bf16 for Int8AttentionParams, as their pointers' types say)
// and float log-sum-exps [splits, H, Nq], their pointers set in p; nothing for one split. Lives
// until the launch is queued.
struct SplitWorkspace {
  at::Tensor out, lse;
  template <typename Params>
  SplitWorkspace(Params& p, const at::TensorOptions& options) {
    if (p.splits <= 1) return;
    using Partial = std::remove_pointer_t<decltype(p.partial_out)>;
    static_assert(std::is_same_v<Partial, float> || std::is_same_v<Partial, uint16_t>, "float or bf16 partial rows");
    out = at::empty({p.splits, p.heads, p.queries, 64}, options.dtype(std::is_same_v<Partial, float> ? at::kFloat : at::kBFloat16));
    lse = at::empty({p.splits, p.heads, p.queries}, options.dtype(at::kFloat));
    p.partial_out = static_cast<Partial*>(out.data_ptr());
    p.partial_lse = lse.data_ptr<float>();
  }
};

// The fused kernel's launch for q over dense rows or pages [0, page_count) and the current frame,
// writing `out`, with its split workspace; bf16_inputs (pages only): q and the frame stay bf16 and
// the kernel converts them as it loads them, where otherwise they are cast to fp16 copies first.
// The launch depends on the host's page count only (each page's valid count is read on the device).
void LaunchFused(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                 const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur, int splits,
                 int min_blocks, bool bf16_inputs, const at::Tensor& out, const at::Tensor& out_lse = {}) {
  const bool paged = pages && page_count > 0;
  bf16_inputs = bf16_inputs && paged;
  // Packed pages are multiplied in fp16 (see kv_kernels.h).
  const bool cast = paged && !bf16_inputs;
  // (the queries may be a view of whole rows, as the query tail is: the heads' stride is passed on)
  const bool rows = q.stride(2) == 1 && q.stride(1) == kKernelHeadDim && (q.size(0) == 1 || q.stride(0) >= q.size(1) * kKernelHeadDim);
  const at::Tensor qx = cast ? q.to(at::kHalf).contiguous() : rows ? q : q.contiguous();
  const at::Tensor kx = (cast ? k_cur.to(at::kHalf) : k_cur).contiguous(), vx = (cast ? v_cur.to(at::kHalf) : v_cur).contiguous();
  AttentionParams p;
  p.q = reinterpret_cast<const uint16_t*>(qx.data_ptr());
  p.q_head_stride = qx.stride(0);
  p.bf16_inputs = bf16_inputs;
  p.heads = static_cast<int>(q.size(0));
  p.queries = static_cast<int>(q.size(1));
  p.scale = 0.125f;
  p.k_cur = reinterpret_cast<const uint16_t*>(kx.data_ptr());
  p.v_cur = reinterpret_cast<const uint16_t*>(vx.data_ptr());
  p.cur_tokens = static_cast<int>(k_cur.size(1));
  p.paged_min_blocks = min_blocks;
  if (paged) {
    CheckPages(*pages);
    p.format = pages->layout.bits == 4 ? KvFormat::kPaged4 : KvFormat::kPaged2;
    p.pages = View(*pages, page_count);
    if (64 % pages->layout.slots != 0) throw Error("CUDA attention needs a page size (--k-group) dividing 64, got " + std::to_string(pages->layout.slots));
  } else if (dense_tokens > 0) {  // (checked by AttentionCuda)
    p.format = KvFormat::kBf16;
    p.k_dense = reinterpret_cast<const uint16_t*>(dense_k.data_ptr<at::BFloat16>());
    p.v_dense = reinterpret_cast<const uint16_t*>(dense_v.data_ptr<at::BFloat16>());
    p.dense_head_stride = dense_k.stride(0);
    p.dense_tokens = static_cast<int>(dense_tokens);
  }
  p.out = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  p.out_lse = out_lse.defined() ? out_lse.data_ptr<float>() : nullptr;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  // A few query rows over pages: a warp per tile (LaunchFewQueriesAttention), not a block.
  const bool few = bf16_inputs && p.queries <= kMaxFewQueries && (p.pages.slots == 16 || p.pages.slots == 32);
  if (few) p.splits = splits > 0 ? std::min(splits, FewQueriesKeyTiles(p)) : ChooseFewQueriesSplits(p, sms);
  else p.splits = splits > 0 ? std::min(splits, AttentionKeyTiles(p)) : ChooseAttentionSplits(p, sms);
  const SplitWorkspace workspace(p, q.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CheckCuda(few ? LaunchFewQueriesAttention(p, stream) : LaunchAttention(p, stream), "KV attention kernel");
}

at::Tensor FusedAttention(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                          const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur, int splits,
                          const KernelOptions& options) {
  at::Tensor out = at::empty_like(q);
  LaunchFused(q, dense_k, dense_v, dense_tokens, pages, page_count, k_cur, v_cur, splits, options.fused_min_blocks,
              /*bf16_inputs=*/false, out);
  return out;
}

constexpr int64_t kLengthBucket = 2048;  // rows per cuDNN length bucket (kDequantSdpaBucketed)
constexpr double kScale = 0.125;  // 1 / sqrt(kKernelHeadDim)
// Up to this many pages the dequantize kernel sums the counts itself (each page block the pages
// before its own, each zeroing block all of them: at most 4 loads a thread): no upload, whose copy
// and its latency cost about 14 us before each layer's attention (call 107; a 530 MB kivi4 budget
// holds about 570 pages a layer).
constexpr int64_t kInKernelPrefixPages = 1024;

constexpr int64_t kDefaultChunkTokens = 131072;
int64_t ChunkTokens(const KernelOptions& options) {
  return options.attention_chunk_tokens > 0 ? options.attention_chunk_tokens : kDefaultChunkTokens;
}

// One attention call on [H, N, D] tensors (scale 1/8). With `lse` also its log-sum-exp (natural log,
// float [H, Nq]). `backend`: the caller's choice (KernelOptions::sdpa); kAuto is torch's own choice,
// or cuDNN when the log-sum-exp is needed.
at::Tensor SdpaCall(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor* lse, SdpaBackend backend) {
  const at::Tensor q4 = q.unsqueeze(0), k4 = k.unsqueeze(0), v4 = v.unsqueeze(0);
  const int64_t heads = q.size(0), nq = q.size(1);
  if (backend == SdpaBackend::kAuto) {
    if (!lse) return at::scaled_dot_product_attention(q4, k4, v4).squeeze(0);
    backend = SdpaBackend::kCudnn;
  }
  at::Tensor out, l;
  switch (backend) {
    case SdpaBackend::kFlash: {
      auto r = at::_scaled_dot_product_flash_attention(q4, k4, v4, 0.0, false, false, 0.125);
      out = std::get<0>(r), l = std::get<1>(r);
      break;
    }
    case SdpaBackend::kCudnn: {
      auto r = at::_scaled_dot_product_cudnn_attention(q4, k4, v4, std::nullopt, lse != nullptr, 0.0, false, false, 0.125);
      out = std::get<0>(r), l = std::get<1>(r);
      break;
    }
    default: {
      auto r = at::_scaled_dot_product_efficient_attention(q4, k4, v4, std::nullopt, lse != nullptr, 0.0, false, 0.125);
      out = std::get<0>(r), l = std::get<1>(r);
      break;
    }
  }
  if (lse) *lse = l.reshape({heads, -1}).narrow(1, 0, nq).to(at::kFloat);  // (efficient pads the rows to 32)
  return out.squeeze(0);
}

// cuDNN's Hopper attention kernel (torch's choice here) runs 128-row query tiles on a grid of one
// block per SM: at q = 1041 and 16 heads, 144 tiles take two waves of the 132 SMs where 128 tiles
// take one, and the time doubles (350 against 175 us over 17.4k keys; docs/perf.md, call 69). True
// when the rows past the last whole tile would cost such a wave over a long key range.
bool SplitQueryTail(int64_t heads, int64_t nq, int64_t nk) {
  constexpr int64_t kTile = 128, kMinKeys = 8192;  // below ~8k keys a wave costs less than a second call
  if (nq % kTile == 0 || nq < kTile || nk < kMinKeys) return false;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const auto waves = [&](int64_t tiles) { return (tiles + sms - 1) / sms; };
  return waves(heads * (nq / kTile + 1)) > waves(heads * (nq / kTile));
}

// SdpaCall, with the query rows past the last whole cuDNN tile sent to flash attention when they
// would cost cuDNN a wave (SplitQueryTail): flash splits a long key range over blocks when it has
// few query tiles (37 us for 17 rows over 17.4k keys). The two parts own disjoint query rows:
// SdpaParts hands them back apart, Sdpa concatenates their outputs (and log-sum-exps); the ragged
// path places its own tail (RaggedPagesAttention). tail_beside: the tail runs on a second stream
// beside cuDNN's call, which leaves a few SMs idle (its 128 query tiles on the 132 SMs' persistent
// blocks) and whose keys the tail reads again: 2-11 us a layer less than one after the other alone
// (probe_tail_beside.py, call 137: 207.8 -> 197.0 us at 18,688 rows), and in the dense cache's
// steady step (call 138: bf16 median 15.5 -> 15.4 ms).
// Where cuDNN refuses the inputs (kAuto only), all the rows go to flash attention instead.
// SdpaParts (with_lse: the log-sum-exps too): cuDNN's whole query tiles (o, l) and, where the tail
// goes to flash attention, the tail's own (o_tail, l_tail; undefined where there is none).
struct SdpaOut {
  at::Tensor o, l, o_tail, l_tail;
};
// Whether SdpaParts sends the whole query tiles to cuDNN: asked for, or torch's choice on Hopper.
bool PicksCudnn(SdpaBackend backend) {
  return backend == SdpaBackend::kCudnn || (backend == SdpaBackend::kAuto && at::cuda::getCurrentDeviceProperties()->major == 9);
}

SdpaOut SdpaParts(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool with_lse, SdpaBackend backend,
                  bool tail_beside = false) {
  SdpaOut r;
  if (!PicksCudnn(backend) || !SplitQueryTail(q.size(0), q.size(1), k.size(1))) {
    r.o = SdpaCall(q, k, v, with_lse ? &r.l : nullptr, backend);
    return r;
  }
  const int64_t main = q.size(1) / 128 * 128, rest = q.size(1) - main;
  const at::cuda::CUDAStream caller = at::cuda::getCurrentCUDAStream();
  const at::cuda::CUDAStream side = tail_beside ? at::cuda::getStreamFromPool(false, caller.device_index()) : caller;
  const bool beside = side != caller;
  // One after the other, cuDNN goes first: the tail then finds part of the keys in L2 (call 139,
  // the tail first: its split-KV kernel 0.63 -> 1.12 ms a frame).
  if (!beside) {
    try {
      r.o = SdpaCall(q.narrow(1, 0, main), k, v, with_lse ? &r.l : nullptr, SdpaBackend::kCudnn);
    } catch (const c10::Error&) {
      // cuDNN refused these inputs: flash attention for all of them (kAuto only; SdpaCall's kAuto
      // would ask cuDNN again where the log-sum-exps are needed)
      if (backend != SdpaBackend::kAuto) throw;
      r.o = SdpaCall(q, k, v, with_lse ? &r.l : nullptr, SdpaBackend::kFlash);
      return r;
    }
    r.o_tail = SdpaCall(q.narrow(1, main, rest), k, v, with_lse ? &r.l_tail : nullptr, SdpaBackend::kFlash);
    return r;
  }
  at::cuda::CUDAEvent forked, joined;
  forked.record(caller);
  forked.block(side);
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    try {
      r.o_tail = SdpaCall(q.narrow(1, main, rest), k, v, with_lse ? &r.l_tail : nullptr, SdpaBackend::kFlash);
    } catch (...) {
      // (the fork joined all the same: a graph's capture refuses a stream left unjoined)
      joined.record(side);
      joined.block(caller);
      throw;
    }
    joined.record(side);
  }
  // (the inputs were allocated on the caller's stream, which waits for the side before it goes on:
  // their memory is not reused before the tail has read it; the tail's outputs, allocated on the
  // side, are read and freed on the caller's)
  const auto join = [&] {
    joined.block(caller);
    for (const at::Tensor* t : {&r.o_tail, &r.l_tail})
      if (t->defined()) t->record_stream(caller);
  };
  try {
    r.o = SdpaCall(q.narrow(1, 0, main), k, v, with_lse ? &r.l : nullptr, SdpaBackend::kCudnn);
  } catch (const c10::Error&) {
    join();
    // cuDNN refused these inputs: flash attention for all of them (kAuto only)
    if (backend != SdpaBackend::kAuto) throw;
    SdpaOut whole;
    whole.o = SdpaCall(q, k, v, with_lse ? &whole.l : nullptr, SdpaBackend::kFlash);
    return whole;
  }
  join();
  return r;
}

at::Tensor Sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor* lse, SdpaBackend backend,
                bool tail_beside = false) {
  SdpaOut r = SdpaParts(q, k, v, lse != nullptr, backend, tail_beside);
  if (!r.o_tail.defined()) {
    if (lse) *lse = r.l;
    return r.o;
  }
  if (lse) *lse = at::cat({r.l, r.l_tail}, 1);
  return at::cat({r.o, r.o_tail}, 1);
}

// Folds a partial attention (o bf16 [H, N, 64], l float [H, N]) over more keys into (out, lse):
// the first part is taken as it is, later ones merged by one kernel into a float out (rounded to
// bf16 once, by the caller), or, for the `last` part, into a bf16 out (lse then undefined). o may
// be any [H, N, 64] view with contiguous channels (flash attention's tokens-major output).
// Optionally (device int32 scalars, MergeParams): `pad` rows of zero keys and values among the keys
// that (out, lse) attended, taken out; `part_keys`, the new part's key count (0: o, l ignored). An
// undefined o needs a `pad`: that correction alone. out_tail, lse_tail (with a last part): the
// running part's query rows past out's held apart ([H, Nt, 64] and [H, Nt]; SdpaParts' tail).
void MergeByLse(at::Tensor& out, at::Tensor& lse, const at::Tensor& o, const at::Tensor& l, bool last = false,
                const int32_t* pad = nullptr, const int32_t* part_keys = nullptr, const at::Tensor& out_tail = {},
                const at::Tensor& lse_tail = {}, bool tail_final = false) {
  if (!out.defined()) {
    if (pad || out_tail.defined()) throw Error("attention merge: zero rows or a tail to take into a part that is not there");
    out = o;
    lse = l;
    return;
  }
  // (cuDNN may hand its output back with the heads interleaved: the kernel wants [H, N, 64] rows)
  const bool bf16 = out.scalar_type() == at::kBFloat16;
  const at::Tensor xc = bf16 ? out.contiguous() : out.to(at::kFloat).contiguous(), xl = lse.to(at::kFloat).contiguous();
  if (xl.numel() * 64 != xc.numel()) throw Error("attention merge: log-sum-exps " + Describe(xl) + " for output " + Describe(xc));
  MergeParams p;
  // the running part's full shape, with its tail
  std::vector<int64_t> full = xc.sizes().vec();
  at::Tensor tc, tl;
  if (out_tail.defined()) {
    tc = out_tail.to(xc.scalar_type()).contiguous();
    tl = lse_tail.to(at::kFloat).contiguous();
    if (!last || xc.dim() != 3 || xc.size(2) != kKernelHeadDim || xl.dim() != 2 || xl.size(0) != xc.size(0) || xl.size(1) != xc.size(1) ||
        tc.dim() != 3 || tc.size(0) != xc.size(0) || tc.size(2) != kKernelHeadDim || tl.dim() != 2 || tl.size(0) != xl.size(0) ||
        tl.size(1) != tc.size(1))
      throw Error("attention merge: a tail " + Describe(tc) + " with log-sum-exps " + Describe(tl) + " for running rows " +
                  Describe(xc) + " (a last part only)");
    full[1] += tc.size(1);
    p.out_tail = tc.data_ptr();
    p.lse_tail = tl.data_ptr<float>();
    p.tail_from = xc.size(1);
    p.queries = full[1];
    p.tail_final = tail_final;
  }
  at::Tensor oc, lc;
  if (o.defined()) {
    const bool as_is = o.scalar_type() == at::kBFloat16 && o.dim() == 3 && o.size(2) == kKernelHeadDim && o.stride(2) == 1 &&
                       o.stride(0) % 2 == 0 && o.stride(1) % 2 == 0 && o.stride(0) > 0 && o.stride(1) > 0 &&
                       reinterpret_cast<uintptr_t>(o.data_ptr()) % 4 == 0;
    oc = as_is ? o : o.to(at::kBFloat16).contiguous();
    lc = l.to(at::kFloat).contiguous();
    if (oc.sizes().vec() != full || lc.numel() != full[0] * full[1])
      throw Error("attention merge: parts of different shapes " + Describe(xc) + " and " + Describe(oc));
    p.o = reinterpret_cast<const uint16_t*>(oc.data_ptr<at::BFloat16>());
    p.queries = oc.size(1);
    p.o_head_stride = oc.stride(0);
    p.o_row_stride = oc.stride(1);
    p.l = lc.data_ptr<float>();
  } else if (!pad) {
    throw Error("attention merge: neither a part nor zero rows to fold in");
  }
  const at::Tensor merged = at::empty(full, xc.options().dtype(last ? at::kBFloat16 : at::kFloat));
  const at::Tensor merged_lse = last ? at::Tensor() : at::empty_like(xl);
  p.out = xc.data_ptr();
  p.out_bf16 = bf16;
  p.lse = xl.data_ptr<float>();
  p.rows = full[0] * full[1];
  p.pad = pad;
  p.part_keys = part_keys;
  if (last) p.merged_bf16 = reinterpret_cast<uint16_t*>(merged.data_ptr<at::BFloat16>());
  else p.merged = merged.data_ptr<float>();
  p.merged_lse = last ? nullptr : merged_lse.data_ptr<float>();
  CheckCuda(LaunchMergeByLse(p, at::cuda::getCurrentCUDAStream()), "attention merge kernel");
  out = merged;
  lse = merged_lse;
}

// Attention over rows [0, rows) of k, v ([H, >= rows, D]) folded into (out, lse). cuDNN builds an
// execution plan per key length, which costs milliseconds; a cache whose length changes every frame
// (bucket > 0) therefore sends the first rows / bucket * bucket rows to cuDNN (few distinct lengths,
// plans reused, once they recur: `lengths`) and the remaining rows to flash attention (no plans).
void AttendRows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t rows, int64_t bucket, SdpaBackend backend,
                at::Tensor& out, at::Tensor& lse, RecurringLengths* lengths = nullptr) {
  int64_t main = bucket > 0 ? rows / bucket * bucket : rows;
  if (bucket > 0 && main > 0 && backend == SdpaBackend::kAuto && lengths && !lengths->Recurring(main)) main = 0;
  at::Tensor l;
  if (main > 0) {
    const at::Tensor o = Sdpa(q, k.narrow(1, 0, main), v.narrow(1, 0, main), &l, backend);
    MergeByLse(out, lse, o, l);
  }
  if (rows > main) {
    const at::Tensor o = Sdpa(q, k.narrow(1, main, rows - main), v.narrow(1, main, rows - main), &l, SdpaBackend::kFlash);
    MergeByLse(out, lse, o, l);
  }
}

// Inclusive prefix sums of host counts of pages [first, first + count) in pinned host memory.
at::Tensor HostValidPrefix(const std::vector<int32_t>& counts, int64_t first, int64_t count) {
  at::Tensor host = at::empty({count}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
  int32_t* h = host.data_ptr<int32_t>();
  int32_t sum = 0;
  for (int64_t i = 0; i < count; ++i) h[i] = sum += counts[first + i];
  return host;
}
// The same on the device: from the host counts when known (one small asynchronous upload), else
// computed from the page metadata.
at::Tensor ValidPrefix(const PagedKv& pages, int64_t first, int64_t count, const std::vector<int32_t>* counts) {
  if (!counts) return at::cumsum(pages.meta.narrow(0, first, count).select(1, 0), 0, at::kInt);
  return HostValidPrefix(*counts, first, count).to(pages.meta.device(), /*non_blocking=*/true);
}

// Expands pages [first, first + count) into k_out/v_out, the current frame (if given) after them.
// Ragged extras (RaggedPagesAttention): the chunk's first valid slot's row, the device lengths
// the kernel writes ({0, queries, 0, rows counted past lengths_base, rows short of it}) and the
// rows it zeroes where the count does not reach them.
struct DequantLengths {
  int64_t page_row = 0;
  int32_t* lengths = nullptr;
  int64_t queries = 0, lengths_base = 0;
  int64_t zero_from = 0, zero_to = 0;
};
void LaunchDequant(const PagedKv& pages, int64_t page_count, int64_t first, int64_t count, const std::vector<int32_t>* counts,
                   const at::Tensor& k_out, const at::Tensor& v_out, const at::Tensor& k_cur, const at::Tensor& v_cur, int64_t cur_row,
                   const DequantLengths& ragged = {}) {
  // Up to kInKernelPrefixPages pages the kernel sums the counts itself (no upload, one launch less).
  const at::Tensor prefix = count > kInKernelPrefixPages ? ValidPrefix(pages, first, count, counts) : at::Tensor();
  DequantParams p;
  p.pages = View(pages, page_count);
  p.valid_prefix = prefix.defined() ? prefix.data_ptr<int32_t>() : nullptr;
  p.heads = static_cast<int>(pages.layout.heads);
  p.first_page = static_cast<int>(first);
  p.page_count = static_cast<int>(count);
  p.k_out = reinterpret_cast<uint16_t*>(k_out.data_ptr<at::BFloat16>());
  p.v_out = reinterpret_cast<uint16_t*>(v_out.data_ptr<at::BFloat16>());
  p.head_stride = k_out.size(1);
  if (k_cur.defined()) {
    p.k_cur = reinterpret_cast<const uint16_t*>(k_cur.data_ptr<at::BFloat16>());
    p.v_cur = reinterpret_cast<const uint16_t*>(v_cur.data_ptr<at::BFloat16>());
    p.cur_tokens = static_cast<int>(k_cur.size(1));
    p.cur_row = static_cast<int>(cur_row);
  }
  p.page_row = static_cast<int>(ragged.page_row);
  p.lengths = ragged.lengths;
  p.queries = static_cast<int>(ragged.queries);
  p.lengths_base = static_cast<int>(ragged.lengths_base);
  p.zero_from = static_cast<int>(ragged.zero_from);
  p.zero_to = static_cast<int>(ragged.zero_to);
  CheckCuda(LaunchDequantizePages(p, pages.layout.bits, at::cuda::getCurrentCUDAStream()), "KV dequantize kernel");
}

// The valid-token counts of the first page_count pages: `known` when given, else read back from the
// device into `read_back` (a synchronisation).
const std::vector<int32_t>* PageCounts(const PagedKv& pages, int64_t page_count, const std::vector<int32_t>* known,
                                       std::vector<int32_t>& read_back) {
  if (known) {
    if (static_cast<int64_t>(known->size()) < page_count) throw Error("page_valid lists fewer pages than page_count");
    return known;
  }
  const at::Tensor c = pages.meta.narrow(0, 0, page_count).select(1, 0).to(at::kCPU).contiguous();
  read_back.assign(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + page_count);
  return &read_back;
}

// AttentionPath::kInt8: the cache (pages or rows) and the current frame after it as the 8-bit
// attention's operands, then one call.
at::Tensor Int8PathAttention(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                             const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur, int splits) {
  if (pages && page_count > 0 && dense_tokens > 0)
    throw Error("8-bit attention: expected a cache of pages or of dense rows, got both (" + std::to_string(page_count) + " pages, " +
                std::to_string(dense_tokens) + " rows)");
  if (!pages || page_count == 0)
    return Int8AttentionCuda(q, dense_tokens > 0 ? QuantizeInt8RowsCuda(dense_k, dense_v, dense_tokens, k_cur, v_cur)
                                                 : QuantizeInt8RowsCuda(k_cur, v_cur, k_cur.size(1)),
                             splits);
  CheckPagesFor(*pages, q.size(0));
  return Int8AttentionCuda(q, ExpandPagesInt8Cuda(*pages, page_count, k_cur, v_cur), splits);
}

// AttentionPath::kDequantRagged: the current frame into rows [0, Nc) and the pages' valid slots
// after it, in a block of rows sized by the page count (Nc + pages x G, fixed while the page count
// is), of which the dequantize kernel also counts the valid ones on the device. cuDNN, whose plans
// need host lengths and which is about three times as fast per row as flash attention at q = 1041
// (probe_remainder_split.py, call 129), takes a fixed span of rows: the certain ones (a multiple of
// the cuDNN bucket the caller knows to be valid rows) and one bucket more, which may pass the rows
// the block holds (its head stride is whole buckets, so the span still fits in it).
// Rows of that span past the device's count are zeroed by the dequantize kernel: each then weighs
// e^0 in cuDNN's softmax and adds nothing to its output, and the merge takes their weight out
// exactly (MergeByLse's pad). The rows past the span, if the count reaches them, go to one
// variable-length flash attention call, which stops at the device's count (no cost for the rows
// past it, no plan, and a CUDA graph of it attends the new count on replay;
// probe_ragged_attention.py). So the call costs cuDNN's time per row for up to a bucket of zero
// rows rather than flash's for one to three buckets of real ones, and has no host copy of the
// pages' counts and no shape that depends on them.
at::Tensor RaggedPagesAttention(const at::Tensor& q, const PagedKv& pages, int64_t page_count, const at::Tensor& k_cur,
                                const at::Tensor& v_cur, int64_t certain_rows, const KernelOptions& options, RecurringLengths* lengths) {
  const int64_t heads = q.size(0), nq = q.size(1), nc = k_cur.size(1);
  CheckPagesFor(pages, heads);
  const int64_t rows = nc + page_count * pages.layout.slots;
  // (cuDNN's plans are keyed by strides too: a head stride in whole buckets changes with the page
  // count only every bucket's worth of pages)
  const int64_t stride = (rows + kCertainRowsBucket - 1) / kCertainRowsBucket * kCertainRowsBucket;
  // cuDNN's rows: the certain ones (whole buckets of kCertainRowsBucket, below rows) and a bucket
  // more, which the stride's whole buckets hold; once that length recurs or when it fell from a
  // longer one
  const int64_t certain = std::max<int64_t>(0, std::min(certain_rows, rows - 1)) / kCertainRowsBucket * kCertainRowsBucket;
  int64_t span = certain > 0 ? certain + kCertainRowsBucket : 0;
  if (span > 0 && lengths && !lengths->RecurringOrFallen(span)) span = 0;
  const at::Tensor k = at::empty({heads, stride, kKernelHeadDim}, q.options()), v = at::empty_like(k);
  // {0, nq, 0, rows counted past the span, zero rows in it}
  const at::Tensor counted = at::empty({5}, q.options().dtype(at::kInt));
  const int32_t* pad = counted.data_ptr<int32_t>() + 4;
  LaunchDequant(pages, page_count, 0, page_count, nullptr, k, v, k_cur, v_cur, 0,
                DequantLengths{nc, counted.data_ptr<int32_t>(), nq, span, certain, span});
  // Three pieces of work after the expansion: R, flash attention over the rows past the span (any
  // when span < rows; variable length, it stops at the device's count); C, cuDNN over the span; T,
  // where cuDNN would pay a second wave for the query rows past its last whole 128-row tile
  // (SplitQueryTail), those rows apart: flash over the span (merged like cuDNN's rows) or the fused
  // kernel over the packed pages and the frame (all keys at once, taken by the merge as they are).
  // Where they run (options.query_tail; a second stream shares the SMs with cuDNN's call, which
  // leaves a few idle): kFlashBesideRest (the default), R then T beside C, one after the other on
  // the second stream (call 143, 600 frames: kivi4 / oscar2 median 16.3 / 16.5 ms against 16.5 /
  // 16.6 for kFlash); kFlash, R beside C, then T after C (R beside: 6 us a layer less than after,
  // probe_overlap.py; T beside on a stream of its own slowed cuDNN: call 138); kFlashBeside, T
  // beside C, then R after C (as the dense cache runs its tail; 16.4 / 16.5); kPages, R beside C
  // and the pages kernel after C (17.0 / 17.1: the kernel takes 49 us where flash takes 33, call
  // 143); kPagesFirst, the pages kernel before the fork, then R beside C.
  const bool rest = rows > span;
  if (span == 0) {
    const auto r = at::_flash_attention_forward(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), counted.narrow(0, 0, 2),
                                                counted.narrow(0, 2, 2), nq, rows, 0.0, false, false, kScale);
    return std::get<0>(r).transpose(0, 1);
  }
  const QueryTail mode = options.query_tail;
  bool split = PicksCudnn(options.sdpa) && SplitQueryTail(heads, nq, span);
  const bool pages_tail = split && (mode == QueryTail::kPages || mode == QueryTail::kPagesFirst);
  const int64_t whole = split ? nq / 128 * 128 : nq;
  const at::Tensor k_span = k.narrow(1, 0, span), v_span = v.narrow(1, 0, span);
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> r;
  SdpaOut main;
  const auto work_rest = [&] {
    // the rows from `span` on: [T, H, D] views of the head-major rows (flash takes any row and head strides)
    const at::Tensor k_rest = k.narrow(1, span, rows - span), v_rest = v.narrow(1, span, rows - span);
    r = at::_flash_attention_forward(q.transpose(0, 1), k_rest.transpose(0, 1), v_rest.transpose(0, 1), counted.narrow(0, 0, 2),
                                     counted.narrow(0, 2, 2), nq, rows - span, 0.0, false, false, kScale);
  };
  const auto work_tail = [&] {
    if (!split) return;  // (cuDNN refused its part: no tail apart)
    if (pages_tail)
      std::tie(main.o_tail, main.l_tail) = PagesAttentionCuda(q.narrow(1, whole, nq - whole), pages, page_count, k_cur, v_cur,
                                                              options.query_tail_splits, options.fused_min_blocks);
    else
      main.o_tail = SdpaCall(q.narrow(1, whole, nq - whole), k_span, v_span, &main.l_tail, SdpaBackend::kFlash);
  };
  const auto work_cudnn = [&] {
    if (!split) {
      main.o = SdpaCall(q, k_span, v_span, &main.l, options.sdpa);
      return;
    }
    try {
      main.o = SdpaCall(q.narrow(1, 0, whole), k_span, v_span, &main.l, SdpaBackend::kCudnn);
    } catch (const c10::Error&) {
      // cuDNN refused these inputs (kAuto only): all the queries by flash attention, and no tail
      // apart (whatever the side computed of one)
      if (options.sdpa != SdpaBackend::kAuto) throw;
      split = false;
      main.o = SdpaCall(q, k_span, v_span, &main.l, SdpaBackend::kFlash);
    }
  };
  std::vector<std::function<void()>> on_side, after;
  if (rest && (!split || mode == QueryTail::kFlash || mode == QueryTail::kFlashBesideRest || pages_tail)) on_side.push_back(work_rest);
  if (split && (mode == QueryTail::kFlashBeside || mode == QueryTail::kFlashBesideRest)) on_side.push_back(work_tail);
  if (split && mode == QueryTail::kPagesFirst) work_tail();
  if (rest && split && mode == QueryTail::kFlashBeside) after.push_back(work_rest);
  if (split && (mode == QueryTail::kFlash || mode == QueryTail::kPages)) after.push_back(work_tail);
  const at::cuda::CUDAStream caller = at::cuda::getCurrentCUDAStream();
  const at::cuda::CUDAStream side = at::cuda::getStreamFromPool(false, caller.device_index());
  const bool beside = !on_side.empty() && side != caller;
  at::cuda::CUDAEvent forked, joined;
  if (beside) {
    forked.record(caller);
    forked.block(side);
  }
  {
    std::optional<c10::cuda::CUDAStreamGuard> guard;
    if (beside) guard.emplace(side);
    try {
      for (const auto& w : on_side) w();
    } catch (...) {
      // (the fork joined all the same: a graph's capture refuses a stream left unjoined)
      if (beside) joined.record(side), joined.block(caller);
      throw;
    }
    if (beside) joined.record(side);
  }
  const auto join = [&] {
    if (!beside) return;
    // (the inputs were allocated on the caller's stream, which now waits for the side: their
    // memory is not reused before; the outputs, allocated on the side, are read on the caller's)
    joined.block(caller);
    for (const at::Tensor* t : {&std::get<0>(r), &std::get<1>(r), &main.o_tail, &main.l_tail})
      if (t->defined()) t->record_stream(caller);
  };
  try {
    work_cudnn();
    for (const auto& w : after) w();
  } catch (...) {
    join();
    throw;
  }
  join();
  if (!split) main.o_tail = main.l_tail = at::Tensor();
  at::Tensor out, lse;
  MergeByLse(out, lse, main.o, main.l);
  // (o_rest tokens-major, as flash wrote it; with no rows counted past the span, flash's part is
  // empty and ignored; the query tail, where split off, read apart instead of concatenated)
  const at::Tensor o_rest = rest ? std::get<0>(r).transpose(0, 1) : at::Tensor();
  MergeByLse(out, lse, o_rest, rest ? std::get<1>(r).reshape({heads, nq}) : at::Tensor(), /*last=*/true, pad,
             rest ? counted.data_ptr<int32_t>() + 3 : nullptr, main.o_tail, main.l_tail, /*tail_final=*/split && pages_tail);
  return out;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> PagesAttentionCuda(const at::Tensor& q, const PagedKv& pages, int64_t page_count,
                                                     const at::Tensor& k_cur, const at::Tensor& v_cur, int splits, int min_blocks) {
  if (!q.defined() || !q.is_cuda() || q.scalar_type() != at::kBFloat16 || q.dim() != 3 || q.size(2) != kKernelHeadDim ||
      q.stride(2) != 1 || q.stride(1) != kKernelHeadDim)
    throw Error("attention over pages: expected bf16 CUDA queries [H, N, 64] with contiguous rows, got " + Describe(q));
  if (q.size(1) < 1) throw Error("attention over pages: no query rows");
  CheckBf16(k_cur, "current keys", q.size(0));
  CheckBf16(v_cur, "current values", q.size(0));
  if (v_cur.size(1) != k_cur.size(1))
    throw Error("attention over pages: current keys " + Describe(k_cur) + " and values " + Describe(v_cur) + " differ in length");
  CheckPagesFor(pages, q.size(0));
  if (pages.meta.device() != q.device() || k_cur.device() != q.device())
    throw Error("attention over pages: the queries, the current frame and the pages on different devices");
  if (page_count < 1 || page_count > pages.meta.size(0))
    throw Error("attention over pages: " + std::to_string(page_count) + " pages asked of a store of " + std::to_string(pages.meta.size(0)));
  if (min_blocks != 1 && min_blocks != 2) throw Error("attention over pages: min_blocks " + std::to_string(min_blocks) + ", expected 1 or 2");
  const at::Tensor out = at::empty({q.size(0), q.size(1), kKernelHeadDim}, q.options());
  const at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  LaunchFused(q, {}, {}, 0, &pages, page_count, k_cur, v_cur, splits, min_blocks, /*bf16_inputs=*/true, out, lse);
  return {out, lse};
}

namespace {

// Dense cache attended in place, pages expanded once per chunk; chunks merged by log-sum-exp.
// bucket > 0: key lengths change from call to call (see AttendRows).
at::Tensor DequantSdpaAttention(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                                const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur,
                                const std::vector<int32_t>* page_valid, int64_t bucket, const KernelOptions& options,
                                RecurringLengths* lengths) {
  const int64_t heads = q.size(0), nc = k_cur.size(1);
  const int64_t chunk = ChunkTokens(options);
  const SdpaBackend sdpa = options.sdpa;
  at::Tensor out, lse;
  if (!pages || page_count == 0) {
    if (dense_tokens == 0) return Sdpa(q, k_cur, v_cur, nullptr, sdpa);
    for (int64_t s = 0; s < dense_tokens; s += chunk) {
      const int64_t len = std::min(chunk, dense_tokens - s);
      AttendRows(q, dense_k.narrow(1, s, len), dense_v.narrow(1, s, len), len, bucket, sdpa, out, lse, lengths);
    }
    AttendRows(q, k_cur, v_cur, nc, 0, sdpa, out, lse);
    return out.to(at::kBFloat16);
  }
  CheckPagesFor(*pages, heads);
  std::vector<int32_t> read_back;
  page_valid = PageCounts(*pages, page_count, page_valid, read_back);
  const std::vector<int32_t>& counts = *page_valid;
  const at::Tensor& qh = q;  // bf16 throughout: rows, queries and output
  const auto rows_opts = q.options();
  int64_t first = 0;
  while (first < page_count) {
    int64_t count = 0, tokens = 0;
    while (first + count < page_count && (count == 0 || tokens + counts[first + count] <= chunk)) tokens += counts[first + count++];
    const bool last = first + count == page_count;
    // The last chunk also holds the current frame when it fits.
    const bool with_current = last && tokens + nc <= chunk;
    const int64_t rows = tokens + (with_current ? nc : 0);
    // cuDNN's plans are keyed by strides too: with changing lengths the rows go into buffers whose
    // head stride is a multiple of the bucket, so that a handful of plans serve every frame.
    const int64_t room = bucket > 0 ? (rows + bucket - 1) / bucket * bucket : rows;
    const at::Tensor k = at::empty({heads, room, 64}, rows_opts), v = at::empty({heads, room, 64}, rows_opts);
    LaunchDequant(*pages, page_count, first, count, page_valid, k, v, with_current ? k_cur : at::Tensor(), v_cur, tokens);
    // One chunk of fixed-length rows: a single call, nothing to merge.
    if (with_current && !out.defined() && bucket == 0) return Sdpa(qh, k, v, nullptr, sdpa);
    AttendRows(qh, k, v, rows, bucket, sdpa, out, lse, lengths);
    if (last && !with_current) AttendRows(qh, k_cur, v_cur, nc, 0, sdpa, out, lse);
    first += count;
  }
  return out.to(at::kBFloat16);
}

}  // namespace

bool RaggedAttends(AttentionPath path, const PagedKv* pages, int64_t page_count, int64_t dense_tokens, int64_t current_tokens,
                   const KernelOptions& options) {
  if (path == AttentionPath::kAuto) path = options.attention;
  return path == AttentionPath::kDequantRagged && pages && page_count > 0 && dense_tokens == 0 && current_tokens > 0 &&
         (options.sdpa == SdpaBackend::kAuto || options.sdpa == SdpaBackend::kFlash) &&
         at::cuda::getCurrentDeviceProperties()->major >= 8 && current_tokens + page_count * pages->layout.slots <= ChunkTokens(options);
}

at::Tensor AttentionCuda(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                         const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur, int splits,
                         AttentionPath path, const std::vector<int32_t>* page_valid, const KernelOptions& options,
                         RecurringLengths* lengths, int64_t certain_rows) {
  options.Check();
  CheckBf16(q, "queries");
  CheckBf16(k_cur, "current keys", q.size(0));
  CheckBf16(v_cur, "current values", q.size(0));
  if (!pages && dense_tokens > 0 &&
      (!dense_k.is_cuda() || dense_k.scalar_type() != at::kBFloat16 || dense_k.dim() != 3 || dense_k.size(2) != 64 ||
       dense_k.stride(1) != 64 || dense_k.stride(2) != 1 || !dense_v.is_cuda() || dense_v.strides() != dense_k.strides() ||
       dense_k.size(1) < dense_tokens))
    throw Error("dense cache: expected bf16 CUDA [H, T, 64] with rows contiguous and at least " + std::to_string(dense_tokens) + " rows");
  // kAuto: the path the options name, else the dequantize-once path.
  AttentionPath resolved = path != AttentionPath::kAuto ? path : options.attention;
  if (resolved == AttentionPath::kAuto) resolved = AttentionPath::kDequantSdpa;
  if (resolved == AttentionPath::kFused) return FusedAttention(q, dense_k, dense_v, dense_tokens, pages, page_count, k_cur, v_cur, splits, options);
  if (resolved == AttentionPath::kInt8)
    return Int8PathAttention(q, dense_k, dense_v, dense_tokens, pages, page_count, k_cur, v_cur, splits);
  if (resolved == AttentionPath::kDequantRagged) {
    if (RaggedAttends(resolved, pages, page_count, dense_tokens, k_cur.size(1), options))
      return RaggedPagesAttention(q, *pages, page_count, k_cur, v_cur, certain_rows, options, lengths);
    resolved = AttentionPath::kDequantSdpaBucketed;  // (what it does not serve: the changing lengths' path)
  }
  const int64_t bucket = resolved == AttentionPath::kDequantSdpaBucketed ? kLengthBucket : 0;
  return DequantSdpaAttention(q, dense_k, dense_v, dense_tokens, pages, page_count, k_cur, v_cur, page_valid, bucket, options, lengths);
}

at::Tensor AttentionRowsCuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t rows, bool same_length,
                             const KernelOptions& options, RecurringLengths* lengths) {
  options.Check();
  CheckBf16(q, "queries");
  if (!k.is_cuda() || k.scalar_type() != at::kBFloat16 || k.dim() != 3 || k.size(0) != q.size(0) || k.size(2) != 64 ||
      k.stride(1) != 64 || k.stride(2) != 1 || !v.is_cuda() || v.scalar_type() != at::kBFloat16 || v.sizes() != k.sizes() ||
      v.strides() != k.strides() || rows < 1 || k.size(1) < rows)
    throw Error("attention over rows: expected bf16 CUDA k, v [" + std::to_string(q.size(0)) + ", >= " + std::to_string(rows) +
                ", 64] with rows contiguous, got " + Describe(k) + " and " + Describe(v));
  const int64_t chunk = ChunkTokens(options);
  if (same_length && rows <= chunk) return Sdpa(q, k.narrow(1, 0, rows), v.narrow(1, 0, rows), nullptr, options.sdpa, /*tail_beside=*/true);
  at::Tensor out, lse;
  for (int64_t s = 0; s < rows; s += chunk) {
    const int64_t len = std::min(chunk, rows - s);
    AttendRows(q, k.narrow(1, s, len), v.narrow(1, s, len), len, kLengthBucket, options.sdpa, out, lse, lengths);
  }
  return out.to(at::kBFloat16);
}

std::pair<at::Tensor, at::Tensor> DequantizePagesCuda(const PagedKv& pages, int64_t page_count, int64_t first, int64_t count,
                                                      int64_t tokens, int64_t extra_rows) {
  CheckPages(pages);
  if (first < 0 || count < 0 || first + count > page_count || page_count > pages.pages())
    throw Error("dequantize: pages [" + std::to_string(first) + ", " + std::to_string(first + count) + ") outside the " +
                std::to_string(page_count) + " pages present");
  const at::Tensor k = at::empty({pages.layout.heads, tokens + extra_rows, 64}, pages.meta.options().dtype(at::kBFloat16));
  const at::Tensor v = at::empty_like(k);
  LaunchDequant(pages, page_count, first, count, nullptr, k, v, {}, {}, 0);
  return {k, v};
}

at::Tensor TopByScoreCuda(const at::Tensor& scores, int64_t k) {
  if (!scores.is_cuda() || scores.dim() != 1 || scores.scalar_type() != at::kFloat || scores.size(0) > kSelectMaxUnits)
    return TopByScore(scores, k);
  const int64_t units = scores.size(0);
  k = std::max<int64_t>(0, std::min(units, k));
  const at::TensorOptions index = scores.options().dtype(at::kLong);
  if (k == units) return at::arange(units, index);
  const at::Tensor kept = at::empty({k}, index);
  const at::Tensor s = scores.contiguous();
  CheckCuda(LaunchTopKSelect(s.data_ptr<float>(), static_cast<int>(units), static_cast<int>(k), kept.data_ptr<int64_t>(),
                             at::cuda::getCurrentCUDAStream()),
            "top-k select kernel");
  return kept;
}

at::Tensor SlotAttendCuda(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& valid,
                          const at::Tensor& k, const at::Tensor& v) {
  const auto io = q.scalar_type(), kv = keys.scalar_type();
  const bool io_ok = (io == at::kFloat || io == at::kBFloat16) && k.scalar_type() == io && v.scalar_type() == io;
  const bool kv_ok = (kv == at::kFloat || kv == at::kBFloat16) && values.scalar_type() == kv;
  const bool cuda = q.is_cuda() && k.is_cuda() && v.is_cuda() && keys.is_cuda() && values.is_cuda() && valid.is_cuda();
  if (!io_ok || !kv_ok || !cuda || q.dim() != 3 || q.size(1) != 1 || k.sizes() != q.sizes() || v.sizes() != q.sizes() ||
      keys.dim() != 3 || values.sizes() != keys.sizes() || keys.size(0) != q.size(0) || keys.size(2) != q.size(2) ||
      valid.scalar_type() != at::kBool || valid.dim() != 1 || valid.size(0) != keys.size(1) || q.size(2) % 32 != 0 ||
      q.size(2) > kSlotAttendMaxDim || keys.size(1) > kSlotAttendMaxSlots)
    return {};
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const at::Tensor keys_c = keys.contiguous(), values_c = values.contiguous(), valid_c = valid.contiguous();
  at::Tensor out = at::empty_like(qc);
  SlotAttendParams p;
  p.q = qc.data_ptr();
  p.k = kc.data_ptr();
  p.v = vc.data_ptr();
  p.out = out.data_ptr();
  p.io_bf16 = io == at::kBFloat16;
  p.keys = keys_c.data_ptr();
  p.values = values_c.data_ptr();
  p.kv_bf16 = kv == at::kBFloat16;
  p.valid = valid_c.data_ptr<bool>();
  p.heads = static_cast<int>(q.size(0));
  p.slots = static_cast<int>(keys.size(1));
  p.dim = static_cast<int>(q.size(2));
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.dim)));
  p.splits = SlotAttendSplits(p.heads, p.slots);
  const at::Tensor partial = at::empty({p.heads, p.splits, p.dim + 2}, qc.options().dtype(at::kFloat));
  p.partial = partial.data_ptr<float>();
  CheckCuda(LaunchSlotAttend(p, at::cuda::getCurrentCUDAStream()), "slot attention kernel");
  return out;
}

std::pair<at::Tensor, at::Tensor> SplitRowsCuda(const at::Tensor& order, const at::Tensor& kept, int64_t first, int64_t middle) {
  if (middle > kSplitRowsMaxRows) return {};
  auto is_index = [](const at::Tensor& t) { return t.is_cuda() && t.scalar_type() == at::kLong && t.dim() == 1 && t.is_contiguous(); };
  if (!is_index(kept) || kept.size(0) > middle || first < 0 || (order.defined() && (!is_index(order) || order.size(0) != middle)))
    throw Error("split rows: expected contiguous long CUDA kept positions (at most " + std::to_string(middle) + ") and order [" +
                std::to_string(middle) + "], got " + Describe(kept) + " and " + Describe(order));
  const at::Tensor kept_rows = at::empty_like(kept), freed = at::empty({middle - kept.size(0)}, kept.options());
  SplitRowsParams p;
  p.order = order.defined() ? order.data_ptr<int64_t>() : nullptr;
  p.kept = kept.data_ptr<int64_t>();
  p.count = static_cast<int>(kept.size(0));
  p.first = first;
  p.middle = static_cast<int>(middle);
  p.kept_rows = kept_rows.data_ptr<int64_t>();
  p.freed = freed.data_ptr<int64_t>();
  CheckCuda(LaunchSplitRows(p, at::cuda::getCurrentCUDAStream()), "split rows kernel");
  return {kept_rows, freed};
}

at::Tensor PooledQueriesCuda(const at::Tensor& q_in, int pool_size, int special_tokens) {
  if (!q_in.is_cuda() || (q_in.scalar_type() != at::kBFloat16 && q_in.scalar_type() != at::kFloat) || q_in.dim() != 3 ||
      q_in.size(2) != 64 || q_in.size(0) < 1 || pool_size < 1 || special_tokens < 0)
    throw Error("pooled queries: expected bf16 or float CUDA queries [H, N, 64] and a pool of at least one token, got " + Describe(q_in));
  const at::Tensor q = q_in.contiguous();
  PooledQueryParams p;
  p.q = q.data_ptr();
  p.bf16 = q.scalar_type() == at::kBFloat16;
  p.heads = static_cast<int>(q.size(0));
  p.tokens = static_cast<int>(q.size(1));
  p.special = special_tokens;
  p.pool = pool_size;
  const int64_t special = std::min<int64_t>(special_tokens, p.tokens), rest = p.tokens - special;
  p.rows = static_cast<int>(special + (rest + pool_size - 1) / pool_size);
  at::Tensor out = at::empty({p.rows, 64}, q.options().dtype(at::kFloat));
  p.out = out.data_ptr<float>();
  CheckCuda(LaunchPooledQueries(p, at::cuda::getCurrentCUDAStream()), "pooled queries kernel");
  return out;
}

void MoveRowsCuda(const at::Tensor& k, const at::Tensor& v, int64_t from, const at::Tensor& to) {
  CheckBf16(k, "dense keys");
  CheckBf16(v, "dense values");
  if (k.dim() != 3 || k.size(2) != 64 || v.sizes() != k.sizes() || !to.is_cuda() || to.scalar_type() != at::kLong || to.dim() != 1 ||
      !to.is_contiguous() || from < 0 || from + to.size(0) > k.size(1))
    throw Error("move rows: expected bf16 [H, capacity, 64] caches and long CUDA row indices for rows [" + std::to_string(from) + ", " +
                std::to_string(from + to.size(0)) + "), got " + Describe(k) + " and " + Describe(to));
  MoveRowsParams p;
  p.k = reinterpret_cast<uint16_t*>(k.data_ptr<at::BFloat16>());
  p.v = reinterpret_cast<uint16_t*>(v.data_ptr<at::BFloat16>());
  p.heads = static_cast<int>(k.size(0));
  p.capacity = k.size(1);
  p.from = from;
  p.to = to.data_ptr<int64_t>();
  p.count = static_cast<int>(to.size(0));
  CheckCuda(LaunchMoveRows(p, at::cuda::getCurrentCUDAStream()), "move rows kernel");
}

at::Tensor TokenScoresCuda(const at::Tensor& q_bar, const at::Tensor& dense_k, int64_t dense_tokens, const PagedKv* pages,
                           int64_t page_count, int heads) {
  const at::Tensor qb = q_bar.to(at::kFloat).contiguous();
  if (!qb.is_cuda() || qb.dim() != 2 || qb.size(1) != 64) throw Error("pooled queries: expected CUDA [M, 64]");
  ScoreParams p;
  p.q_bar = qb.data_ptr<float>();
  p.rows = static_cast<int>(qb.size(0));
  p.head_dim = 64;
  p.heads = heads;
  at::Tensor scores;
  if (pages) {
    CheckPages(*pages);
    p.format = pages->layout.bits == 4 ? KvFormat::kPaged4 : KvFormat::kPaged2;
    p.bits = pages->layout.bits;
    p.pages = View(*pages, page_count);
    scores = at::empty({page_count, pages->layout.slots}, qb.options());
  } else {
    p.format = KvFormat::kBf16;
    p.k_dense = reinterpret_cast<const uint16_t*>(dense_k.data_ptr<at::BFloat16>());
    p.dense_head_stride = dense_k.stride(0);
    p.dense_tokens = static_cast<int>(dense_tokens);
    scores = at::empty({dense_tokens}, qb.options());
  }
  p.scores = scores.data_ptr<float>();
  CheckCuda(LaunchTokenScores(p, at::cuda::getCurrentCUDAStream()), "KV score kernel");
  return scores;
}

at::Tensor RotateCuda(const at::Tensor& x) {
  if (!x.is_cuda() || (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kFloat) || x.dim() < 1 || x.size(-1) != 64)
    throw Error("rotation: expected a bf16 or float CUDA tensor [..., 64], got " + Describe(x));
  const at::Tensor xc = x.contiguous();
  const at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  RotateJob job;
  job.x = xc.data_ptr();
  job.rows = xc.numel() / 64;
  job.out_f32 = out.data_ptr<float>();
  CheckCuda(LaunchRotateRows(job, RotateJob{}, x.scalar_type() == at::kBFloat16, at::cuda::getCurrentCUDAStream()), "rotation kernel");
  return out;
}

RotatedQk RotateQkCuda(const at::Tensor& q, const at::Tensor& k) {
  const bool ok = q.is_cuda() && k.is_cuda() && q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 && q.dim() >= 1 &&
                  k.dim() >= 1 && q.size(-1) == 64 && k.size(-1) == 64 && q.device() == k.device();
  if (!ok) throw Error("rotation of q and k: expected bf16 CUDA tensors [..., 64] on one device, got " + Describe(q) + " and " + Describe(k));
  const at::Tensor qc = q.contiguous(), kc = k.contiguous();
  RotatedQk r{at::empty(q.sizes(), q.options().dtype(at::kFloat)), at::empty(q.sizes(), q.options()), at::empty(k.sizes(), k.options())};
  RotateJob a, b;
  a.x = qc.data_ptr();
  a.rows = qc.numel() / 64;
  a.out_f32 = r.q_f32.data_ptr<float>();
  a.out_bf16 = r.q_bf16.data_ptr();
  b.x = kc.data_ptr();
  b.rows = kc.numel() / 64;
  b.out_bf16 = r.k_bf16.data_ptr();
  CheckCuda(LaunchRotateRows(a, b, /*bf16=*/true, at::cuda::getCurrentCUDAStream()), "rotation kernel (q and k)");
  return r;
}

at::Tensor PageScoresCuda(const at::Tensor& slot_scores, const at::Tensor& valid, bool mean) {
  if (!slot_scores.is_cuda() || slot_scores.scalar_type() != at::kFloat || slot_scores.dim() != 2 || !slot_scores.is_contiguous() ||
      slot_scores.size(1) > 32 || !valid.is_cuda() || valid.scalar_type() != at::kInt || valid.dim() != 1 ||
      valid.size(0) != slot_scores.size(0))
    throw Error("page scores: expected contiguous float CUDA slot scores [P, G <= 32] and int32 CUDA valid counts [P], got " +
                Describe(slot_scores) + " and " + Describe(valid));
  const at::Tensor out = at::empty({slot_scores.size(0)}, slot_scores.options());
  PageScoreParams p;
  p.slot_scores = slot_scores.data_ptr<float>();
  p.pages = static_cast<int>(slot_scores.size(0));
  p.slots = static_cast<int>(slot_scores.size(1));
  p.valid = valid.data_ptr<int32_t>();
  p.valid_stride = valid.stride(0);
  p.mean = mean;
  p.out = out.data_ptr<float>();
  CheckCuda(LaunchPageScores(p, at::cuda::getCurrentCUDAStream()), "page score kernel");
  return out;
}

namespace {

void GatherPages(const PagedKv& src, int64_t first, const at::Tensor& middle, PagedKv& dst, bool in_place) {
  CheckPages(src);
  CheckPages(dst);
  const int64_t count = first + middle.size(0);
  if (!middle.is_cuda() || middle.scalar_type() != at::kLong || middle.dim() != 1 || !middle.is_contiguous())
    throw Error("gather pages: expected the kept middle pages as contiguous long CUDA [M], got " + Describe(middle));
  if (first < 0 || first > src.pages() || count > dst.pages() || src.layout.heads != dst.layout.heads ||
      src.layout.slots != dst.layout.slots || src.layout.bits != dst.layout.bits || src.layout.v_group != dst.layout.v_group)
    throw Error("gather pages: " + std::to_string(count) + " pages (" + std::to_string(first) + " first) from a store of " +
                std::to_string(src.pages()) + " into one of " + std::to_string(dst.pages()) + " pages of the same layout");
  GatherPagesParams p;
  std::vector<const at::Tensor*> from, to;
  src.ForEach([&](const at::Tensor& t) { from.push_back(&t); });
  dst.ForEach([&](const at::Tensor& t) { to.push_back(&t); });
  p.arrays = static_cast<int>(from.size());
  for (int a = 0; a < p.arrays; ++a) {
    if (!from[a]->is_contiguous() || !to[a]->is_contiguous()) throw Error("gather pages: page arrays must be contiguous");
    p.page_bytes[a] = from[a]->numel() / std::max<int64_t>(1, src.pages()) * static_cast<int64_t>(from[a]->element_size());
    p.src[a] = static_cast<const uint8_t*>(from[a]->data_ptr());
    p.dst[a] = static_cast<uint8_t*>(to[a]->data_ptr());
  }
  p.middle = middle.data_ptr<int64_t>();
  p.first = static_cast<int>(first);
  p.count = static_cast<int>(count);
  p.in_place = in_place;
  CheckCuda(LaunchGatherPages(p, at::cuda::getCurrentCUDAStream()), "gather pages kernel");
}

}  // namespace

void GatherPagesCuda(const PagedKv& src, int64_t first, const at::Tensor& middle, PagedKv& dst) {
  GatherPages(src, first, middle, dst, /*in_place=*/false);
}

void KeepPagesInPlaceCuda(PagedKv& store, int64_t first, const at::Tensor& middle) {
  GatherPages(store, first, middle, store, /*in_place=*/true);
}

namespace {

void CheckRows(const at::Tensor& t, const char* name, int64_t heads, int64_t rows) {
  if (!t.defined() || !t.is_cuda() || t.scalar_type() != at::kBFloat16 || t.dim() != 3 || t.size(0) != heads || t.size(1) < rows ||
      t.size(2) != 64 || t.stride(1) != 64 || t.stride(2) != 1 || t.stride(0) % 8 != 0 ||
      reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0)
    throw Error(std::string("8-bit attention: expected ") + name + " as bf16 CUDA rows [" + (heads >= 0 ? std::to_string(heads) : "H") + ", >= " +
                std::to_string(rows) + ", 64] (rows contiguous, every head 16-byte aligned), got " + Describe(t));
}

}  // namespace

Int8Rows QuantizeInt8RowsCuda(const at::Tensor& k, const at::Tensor& v, int64_t rows, const at::Tensor& k_b, const at::Tensor& v_b) {
  if (!k.defined()) throw Error("8-bit attention: expected keys, got none");
  const int64_t heads = k.dim() == 3 ? k.size(0) : -1;
  CheckRows(k, "keys", heads, rows);
  CheckRows(v, "values", heads, rows);
  const int64_t b_rows = k_b.defined() && k_b.dim() == 3 ? k_b.size(1) : 0;
  if (k_b.defined() || v_b.defined()) {
    CheckRows(k_b, "the second part's keys", heads, b_rows);
    CheckRows(v_b, "the second part's values", heads, b_rows);
    if (v_b.size(1) != b_rows)
      throw Error("8-bit attention: the second part has " + std::to_string(b_rows) + " key rows and " + std::to_string(v_b.size(1)) +
                  " value rows");
  }
  const int64_t total = rows + b_rows;
  if (total < 1 || total > std::numeric_limits<int>::max() - kInt8AttentionTile)
    throw Error("8-bit attention: expected 1 to 2^31 - 65 rows, got " + std::to_string(total));
  const int64_t tiles = (total + kInt8AttentionTile - 1) / kInt8AttentionTile;
  Int8Rows out;
  out.rows = total;
  out.k8 = at::empty({heads, tiles * kInt8AttentionTile, 64}, k.options().dtype(at::kChar));
  out.ks = at::empty({heads, tiles}, k.options().dtype(at::kFloat));
  if (b_rows > 0) {  // V as one block of rows
    out.v = at::empty({heads, total, 64}, v.options());
    out.v.narrow(1, 0, rows).copy_(v.narrow(1, 0, rows));
    out.v.narrow(1, rows, b_rows).copy_(v_b);
  } else {
    out.v = v;
  }
  Int8RowsParams p;
  p.k_a = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  p.a_head_stride = k.stride(0);
  p.a_rows = static_cast<int>(rows);
  if (b_rows > 0) {
    p.k_b = reinterpret_cast<const uint16_t*>(k_b.data_ptr<at::BFloat16>());
    p.b_head_stride = k_b.stride(0);
    p.b_rows = static_cast<int>(b_rows);
  }
  p.heads = static_cast<int>(heads);
  p.tiles = static_cast<int>(tiles);
  p.k8 = out.k8.data_ptr<int8_t>();
  p.ks = out.ks.data_ptr<float>();
  CheckCuda(LaunchQuantizeInt8Rows(p, at::cuda::getCurrentCUDAStream()), "8-bit key kernel");
  return out;
}

std::string Int8WgmmaRequirement() {
  const int capability = CurrentDeviceCapability();
  return std::string("the warpgroup kernel needs code for sm_90a (CMAKE_CUDA_ARCHITECTURES 90a; TORCH_CUDA_ARCH_LIST 9.0a with the "
                     "CUDA LibTorch) and a device of compute capability 9.0; this build ") +
         (Int8WgmmaBuilt() ? "has that code" : "has no such code") + ", the device " +
         (capability < 0 ? "is unknown" : "has " + std::to_string(capability / 10) + "." + std::to_string(capability % 10));
}

Int8Rows ExpandPagesInt8Cuda(const PagedKv& pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur) {
  CheckPages(pages);
  const int64_t heads = pages.layout.heads, slots = pages.layout.slots;
  if (page_count < 0 || page_count > pages.pages())
    throw Error("8-bit attention from pages: expected 0 to " + std::to_string(pages.pages()) + " pages (those present), got " +
                std::to_string(page_count));
  if (k_cur.defined() != v_cur.defined()) throw Error("8-bit attention from pages: the current frame's keys and values go together, got one of them");
  if (k_cur.defined()) {
    CheckBf16(k_cur, "8-bit attention from pages: the current frame's keys", heads);
    CheckBf16(v_cur, "8-bit attention from pages: the current frame's values", heads);
    if (v_cur.size(1) != k_cur.size(1))
      throw Error("8-bit attention from pages: the current frame has " + std::to_string(k_cur.size(1)) + " keys and " +
                  std::to_string(v_cur.size(1)) + " values");
  }
  const int64_t cur = k_cur.defined() ? k_cur.size(1) : 0;
  const int64_t total = page_count * slots + cur;
  if (total < 1 || total > std::numeric_limits<int>::max() - kInt8AttentionTile)
    throw Error("8-bit attention from pages: expected 1 to 2^31 - 65 rows (pages x slots + the current frame), got " +
                std::to_string(total));
  const int64_t tiles = (total + kInt8AttentionTile - 1) / kInt8AttentionTile;
  const at::TensorOptions device = pages.meta.options();
  Int8Rows out;
  out.rows = total;
  out.k8 = at::empty({heads, tiles * kInt8AttentionTile, 64}, device.dtype(at::kChar));
  out.ks = at::empty({heads, tiles}, device.dtype(at::kFloat));
  out.v = at::empty({heads, total, 64}, device.dtype(at::kBFloat16));
  out.tile_mask = at::empty({tiles}, device.dtype(at::kLong));
  Int8PagesParams p;
  p.pages = View(pages, page_count);
  p.page_count = static_cast<int>(page_count);
  if (cur > 0) {
    p.k_cur = reinterpret_cast<const uint16_t*>(k_cur.data_ptr<at::BFloat16>());
    p.v_cur = reinterpret_cast<const uint16_t*>(v_cur.data_ptr<at::BFloat16>());
    p.cur_tokens = static_cast<int>(cur);
  }
  p.heads = static_cast<int>(heads);
  p.tiles = static_cast<int>(tiles);
  p.k8 = out.k8.data_ptr<int8_t>();
  p.ks = out.ks.data_ptr<float>();
  p.v = reinterpret_cast<uint16_t*>(out.v.data_ptr<at::BFloat16>());
  p.v_head_stride = out.v.stride(0);
  p.tile_mask = reinterpret_cast<uint64_t*>(out.tile_mask.data_ptr<int64_t>());
  CheckCuda(LaunchExpandPagesInt8(p, pages.layout.bits, at::cuda::getCurrentCUDAStream()), "8-bit keys from pages kernel");
  return out;
}

at::Tensor Int8AttentionCuda(const at::Tensor& q, const Int8Rows& rows, int splits, int variant) {
  if (!q.defined() || !q.is_cuda() || q.scalar_type() != at::kBFloat16 || q.dim() != 3 || q.size(2) != 64 || q.stride(2) != 1 ||
      q.stride(1) % 4 != 0 || q.stride(0) % 4 != 0 || reinterpret_cast<uintptr_t>(q.data_ptr()) % 8 != 0)
    throw Error("8-bit attention: expected bf16 CUDA queries [H, N, 64] with channels contiguous, got " + Describe(q));
  const int64_t heads = q.size(0), tiles = rows.k8.defined() ? rows.k8.size(1) / kInt8AttentionTile : 0;
  // (tiles = ceil(rows / 64) exactly, as both makers size them: the kernels mask a tile's keys
  // past `rows`, not whole tiles past it)
  if (tiles < 1 || rows.k8.size(0) != heads || rows.rows <= (tiles - 1) * kInt8AttentionTile || rows.rows > tiles * kInt8AttentionTile ||
      !rows.v.defined() || rows.v.size(0) != heads || rows.v.size(1) < rows.rows)
    throw Error("8-bit attention: operands for " + std::to_string(heads) + " heads expected (QuantizeInt8RowsCuda, ExpandPagesInt8Cuda), " +
                "got " + Describe(rows.k8) + " for " + std::to_string(rows.rows) + " rows");
  const at::Tensor& mask = rows.tile_mask;
  if (mask.defined() && (mask.scalar_type() != at::kLong || !mask.is_cuda() || mask.numel() != tiles))
    throw Error("8-bit attention: expected the tiles' masks as int64 CUDA [" + std::to_string(tiles) + "] (ExpandPagesInt8Cuda's), got " +
                Describe(mask));
  at::Tensor out = at::empty({heads, q.size(1), 64}, q.options());
  if (q.size(1) == 0) return out;
  Int8AttentionParams p;
  p.q = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  p.q_head_stride = q.stride(0);
  p.q_row_stride = q.stride(1);
  p.heads = static_cast<int>(heads);
  p.queries = static_cast<int>(q.size(1));
  p.k8 = rows.k8.data_ptr<int8_t>();
  p.ks = rows.ks.data_ptr<float>();
  p.v = reinterpret_cast<const uint16_t*>(rows.v.data_ptr<at::BFloat16>());
  p.v_head_stride = rows.v.stride(0);
  p.rows = static_cast<int>(rows.rows);
  p.tiles = static_cast<int>(tiles);
  p.tile_mask = rows.tile_mask.defined() ? reinterpret_cast<const uint64_t*>(rows.tile_mask.data_ptr<int64_t>()) : nullptr;
  p.out = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  p.out_head_stride = out.stride(0);
  p.out_row_stride = out.stride(1);
  if (variant == kInt8DefaultVariant) variant = DefaultInt8AttentionVariant();
  if (variant < 0 || variant >= Int8AttentionVariants())
    throw Error("8-bit attention: variant " + std::to_string(variant) + " unknown (0 to " + std::to_string(Int8AttentionVariants() - 1) +
                ", or kInt8DefaultVariant)");
  if (!Int8AttentionVariantAvailable(variant))
    throw Error("8-bit attention: variant " + std::to_string(variant) + " does not run here: " + Int8WgmmaRequirement());
  p.variant = variant;
  if (splits > kInt8MaxSplits)
    throw Error("8-bit attention: expected at most " + std::to_string(kInt8MaxSplits) +
                " splits over the keys (0 or less: automatic), got " + std::to_string(splits));
  if (splits <= 0) splits = ChooseInt8AttentionSplits(p, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  p.splits = std::min(splits, p.tiles);
  const SplitWorkspace workspace(p, q.options());
  CheckCuda(LaunchInt8Attention(p, at::cuda::getCurrentCUDAStream()), "8-bit attention kernel");
  return out;
}

}  // namespace streamrecon::kernels
