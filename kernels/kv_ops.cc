// LibTorch-facing side of the KV-cache kernels (the only file here that touches tensors).
#include "kernels/kv_ops.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAStream.h>

#include "core/errors.h"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

void CheckCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // do not leave the error for the next CUDA call to report
  throw Error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

void CheckBf16(const at::Tensor& t, const char* name, int64_t heads = -1) {
  if (!t.defined() || !t.is_cuda() || t.scalar_type() != at::kBFloat16 || t.dim() != 3 || t.size(2) != 64 || !t.is_contiguous())
    throw Error(std::string(name) + ": expected a contiguous bf16 CUDA tensor [H, N, 64], got " +
                (t.defined() ? std::string(c10::toString(t.scalar_type())) + " " + c10::str(t.sizes()) + (t.is_cuda() ? " cuda" : " cpu") +
                                   (t.is_contiguous() ? "" : " non-contiguous")
                             : std::string("undefined")));
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

}  // namespace

void AppendPagesCuda(const at::Tensor& k, const at::Tensor& v, bool oscar, bool v_hadamard, int frame, PagedKv& store,
                     int64_t first_page) {
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
  AppendParams p;
  p.k = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  p.v = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  p.heads = static_cast<int>(k.size(0));
  p.tokens = static_cast<int>(k.size(1));
  p.head_dim = 64;
  p.bits = L.bits;
  p.oscar = oscar;
  p.v_hadamard = v_hadamard;
  p.frame = frame;
  p.k_codes = store.k_codes.data_ptr<uint8_t>();
  p.k_params = reinterpret_cast<uint32_t*>(store.k_params.data_ptr<int16_t>());
  p.v_codes = store.v_codes.data_ptr<uint8_t>();
  p.v_params = reinterpret_cast<uint32_t*>(store.v_params.data_ptr<int16_t>());
  p.norms = store.norms.data_ptr<float>();
  p.meta = store.meta.data_ptr<int32_t>();
  p.first_page = static_cast<int>(first_page);
  p.slots = L.slots;
  p.v_group = L.v_group;
  CheckCuda(LaunchAppendPages(p, at::cuda::getCurrentCUDAStream()), "KV append kernel");
}

at::Tensor AttentionCuda(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                         const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur, int splits) {
  CheckBf16(q, "queries");
  CheckBf16(k_cur, "current keys", q.size(0));
  CheckBf16(v_cur, "current values", q.size(0));
  const bool paged = pages && page_count > 0;
  // Packed pages are multiplied in fp16 (see kv_kernels.h).
  const at::Tensor qx = paged ? q.to(at::kHalf) : q, kx = paged ? k_cur.to(at::kHalf) : k_cur, vx = paged ? v_cur.to(at::kHalf) : v_cur;
  AttentionParams p;
  p.q = reinterpret_cast<const uint16_t*>(qx.data_ptr());
  p.heads = static_cast<int>(q.size(0));
  p.queries = static_cast<int>(q.size(1));
  p.scale = 0.125f;
  p.k_cur = reinterpret_cast<const uint16_t*>(kx.data_ptr());
  p.v_cur = reinterpret_cast<const uint16_t*>(vx.data_ptr());
  p.cur_tokens = static_cast<int>(k_cur.size(1));
  if (paged) {
    CheckPages(*pages);
    p.format = pages->layout.bits == 4 ? KvFormat::kPaged4 : KvFormat::kPaged2;
    p.pages = View(*pages, page_count);
    if (64 % pages->layout.slots != 0) throw Error("CUDA attention needs a page size (--k-group) dividing 64, got " + std::to_string(pages->layout.slots));
  } else if (dense_tokens > 0) {
    if (!dense_k.is_cuda() || dense_k.scalar_type() != at::kBFloat16 || dense_k.size(2) != 64 || dense_k.stride(1) != 64 ||
        dense_k.stride(2) != 1 || !dense_v.is_cuda() || dense_v.strides() != dense_k.strides())
      throw Error("dense cache: expected bf16 CUDA [H, T, 64] with rows contiguous");
    p.format = KvFormat::kBf16;
    p.k_dense = reinterpret_cast<const uint16_t*>(dense_k.data_ptr<at::BFloat16>());
    p.v_dense = reinterpret_cast<const uint16_t*>(dense_v.data_ptr<at::BFloat16>());
    p.dense_head_stride = dense_k.stride(0);
    p.dense_tokens = static_cast<int>(dense_tokens);
  }
  at::Tensor out = at::empty_like(q);
  p.out = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  p.splits = splits > 0 ? std::min(splits, AttentionKeyTiles(p)) : ChooseAttentionSplits(p, sms);
  at::Tensor partial_out, partial_lse;
  if (p.splits > 1) {
    partial_out = at::empty({p.splits, p.heads, p.queries, 64}, q.options().dtype(at::kFloat));
    partial_lse = at::empty({p.splits, p.heads, p.queries}, q.options().dtype(at::kFloat));
    p.partial_out = partial_out.data_ptr<float>();
    p.partial_lse = partial_lse.data_ptr<float>();
  }
  CheckCuda(LaunchAttention(p, at::cuda::getCurrentCUDAStream()), "KV attention kernel");
  return out;
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

}  // namespace streamrecon::kernels
