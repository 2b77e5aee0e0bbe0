// LibTorch-facing entries of the KV-cache kernels: check shapes, dtypes, devices and contiguity
// with messages, fill the plain params structs of kv_kernels.h and launch on the current stream.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/kv_quant.h"

namespace streamrecon::kernels {

// Quantizes k, v (bf16 [H, N, D], CUDA) into pages [first_page, first_page + ceil(N/G)) of `store`
// (device PagedKv with room for them). OScaR (oscar=true) rotates and norm-scales the keys.
void AppendPagesCuda(const at::Tensor& k, const at::Tensor& v, bool oscar, bool v_hadamard, int frame, PagedKv& store,
                     int64_t first_page);

// Attention of q (bf16 [H, Nq, D]) over a cache plus the current frame (k_cur, v_cur bf16 [H, Nc, D]).
// Dense cache: dense_k/dense_v bf16 [H, T_cap, D] of which the first dense_tokens rows are used.
// Paged cache: `pages` (device PagedKv; its first `pages.pages()` pages are used). Returns bf16 [H, Nq, D].
at::Tensor AttentionCuda(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                         const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur,
                         int splits = 0);

// Scores of every cached slot (XStreamVGGT) against pooled queries q_bar (float [M, D]):
// dense: [dense_tokens]; paged: [pages, G] with -inf on padding slots.
at::Tensor TokenScoresCuda(const at::Tensor& q_bar, const at::Tensor& dense_k, int64_t dense_tokens, const PagedKv* pages,
                           int64_t page_count, int heads);

}  // namespace streamrecon::kernels
