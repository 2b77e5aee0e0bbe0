// The XStreamVGGT selection scores from the spec (kv_cache.md section 1), brute force in double
// and written apart from the product's selection code, for the cache tests: pooled current queries
// (the first `special` rows alone, then groups of `pool`, averaged over heads) against
// head-averaged keys as stored, averaged over the pooled rows.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace streamrecon::testing {

inline std::vector<double> BruteForceScores(const at::Tensor& q, const at::Tensor& keys, int pool, int special) {
  const at::Tensor qd = q.to(at::kCPU, at::kDouble), kd = keys.to(at::kCPU, at::kDouble);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < special; ++i) rows.push_back(qd.select(1, i).mean(0));
  for (int64_t start = special; start < qd.size(1); start += pool)
    rows.push_back(qd.narrow(1, start, std::min<int64_t>(pool, qd.size(1) - start)).mean(1).mean(0));
  const at::Tensor k_bar = kd.mean(0);  // [T, D]
  std::vector<double> scores(k_bar.size(0), 0.0);
  for (int64_t t = 0; t < k_bar.size(0); ++t) {
    for (const at::Tensor& r : rows) scores[t] += at::dot(r, k_bar[t]).item<double>();
    scores[t] /= static_cast<double>(rows.size());
  }
  return scores;
}

}  // namespace streamrecon::testing
