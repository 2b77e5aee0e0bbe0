// Scores and selection rules of the pruning policies (policy.h).
#include "core/kv/policy.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace streamrecon {

at::Tensor PooledQueries(const at::Tensor& q, int pool_size, int special_tokens) {
  const int64_t n = q.size(1);
  const int64_t special = std::min<int64_t>(special_tokens, n);
  const int64_t full = (n - special) / pool_size, tail = n - special - full * pool_size;
  std::vector<at::Tensor> rows;
  if (special > 0) rows.push_back(q.narrow(1, 0, special));
  // Whole pools in one reduction (a few kernels, not one per pool), then the partial last pool.
  if (full > 0) rows.push_back(q.narrow(1, special, full * pool_size).reshape({q.size(0), full, pool_size, q.size(2)}).mean(2));
  if (tail > 0) rows.push_back(q.narrow(1, n - tail, tail).mean(1, /*keepdim=*/true));
  return at::cat(rows, 1).mean(0);  // [M, D]
}

at::Tensor ScoresFromPooled(const at::Tensor& q_bar, const at::Tensor& keys) {
  const at::Tensor k_bar = keys.to(q_bar.scalar_type()).mean(0);  // [T, D]
  return at::matmul(q_bar, k_bar.transpose(0, 1)).mean(0);        // [T]
}

at::Tensor XStreamScores(const at::Tensor& q, const at::Tensor& middle_keys, int pool_size, int special_tokens) {
  return ScoresFromPooled(PooledQueries(q, pool_size, special_tokens), middle_keys);
}

at::Tensor PolicyScores(PrunePolicy policy, const at::Tensor& xstream_scores, uint64_t seed, uint64_t salt) {
  if (policy == PrunePolicy::kWindow) return at::arange(xstream_scores.numel(), xstream_scores.options()).view(xstream_scores.sizes());
  if (policy != PrunePolicy::kRandom) return xstream_scores;
  at::Generator gen = at::detail::createCPUGenerator(seed * 1000003ULL + salt);
  const at::Tensor r = at::rand(xstream_scores.sizes(), gen, at::TensorOptions().dtype(at::kDouble)).to(xstream_scores.options());
  return at::where(at::isfinite(xstream_scores), r, xstream_scores);
}

at::Tensor TopByScore(const at::Tensor& scores, int64_t k) {
  const int64_t units = scores.size(0);
  k = std::max<int64_t>(0, std::min(units, k));
  // Highest first; among equal scores the later unit (a stable sort of the reversed units).
  const at::Tensor order = std::get<1>(at::sort(scores.flip(0), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  return std::get<0>(at::sort(units - 1 - order.narrow(0, 0, k)));
}

at::Tensor TrueIndices(const at::Tensor& mask, int64_t count) {
  const at::TensorOptions index = mask.options().dtype(at::kLong);
  // Position i goes to the number of true positions before it; the false ones to a spare last slot.
  const at::Tensor place = at::where(mask, at::cumsum(mask, 0) - 1, count);
  return at::empty({count + 1}, index).scatter_(0, place, at::arange(mask.size(0), index)).narrow(0, 0, count);
}

std::vector<int64_t> SelectByScore(const std::vector<double>& scores, const std::vector<int64_t>& unit_tokens,
                                   const std::vector<int64_t>& unit_bytes, int64_t tokens_left, int64_t bytes_left) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  // Highest score first; ties keep the newer unit (larger index).
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a > b); });
  std::vector<int64_t> kept;
  for (int64_t u : order) {
    const bool fits_tokens = tokens_left < 0 || unit_tokens[u] <= tokens_left;
    const bool fits_bytes = bytes_left < 0 || unit_bytes[u] <= bytes_left;
    if (!fits_tokens || !fits_bytes) continue;
    kept.push_back(u);
    if (tokens_left >= 0) tokens_left -= unit_tokens[u];
    if (bytes_left >= 0) bytes_left -= unit_bytes[u];
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

std::vector<int64_t> SelectDensePages(const std::vector<double>& scores, int64_t frame_tokens, int k_group, int64_t tokens_left) {
  const int64_t middle = static_cast<int64_t>(scores.size());
  std::vector<double> page_scores;
  std::vector<int64_t> page_start, page_tokens;
  for (int64_t f = 0; f < middle; f += frame_tokens)
    for (int64_t p = f; p < std::min(f + frame_tokens, middle); p += k_group) {
      const int64_t len = std::min<int64_t>({k_group, f + frame_tokens - p, middle - p});
      page_scores.push_back(std::accumulate(scores.begin() + p, scores.begin() + p + len, 0.0) / len);
      page_start.push_back(p);
      page_tokens.push_back(len);
    }
  std::vector<int64_t> kept;
  for (int64_t page : SelectByScore(page_scores, page_tokens, page_tokens, tokens_left, -1))
    for (int64_t t = 0; t < page_tokens[page]; ++t) kept.push_back(page_start[page] + t);
  return kept;
}

std::vector<std::vector<int64_t>> SelectSlotsByScore(const std::vector<double>& scores, const std::vector<int64_t>& page_of,
                                                     const std::vector<int64_t>& slot_of, int64_t pages, int64_t page_bytes,
                                                     int64_t tokens_left, int64_t bytes_left) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a > b); });
  std::vector<std::vector<int64_t>> kept(pages);
  for (int64_t i : order) {
    if (tokens_left == 0) break;
    const bool open = !kept[page_of[i]].empty();
    if (!open && bytes_left >= 0 && bytes_left < page_bytes) continue;
    kept[page_of[i]].push_back(slot_of[i]);
    if (tokens_left > 0) --tokens_left;
    if (!open && bytes_left >= 0) bytes_left -= page_bytes;
  }
  for (auto& slots : kept) std::sort(slots.begin(), slots.end());
  return kept;
}

std::vector<std::vector<int64_t>> SelectPageSlots(PrunePolicy policy, const std::vector<double>& scores,
                                                  const std::vector<int64_t>& page_of, const std::vector<int64_t>& slot_of,
                                                  int64_t pages, int64_t page_bytes, int64_t tokens_left, int64_t bytes_left) {
  if (policy != PrunePolicy::kXStreamPage)
    return SelectSlotsByScore(scores, page_of, slot_of, pages, page_bytes, tokens_left, bytes_left);
  std::vector<double> page_scores(pages, 0.0);
  std::vector<int64_t> page_tokens(pages, 0), cost(pages, page_bytes);
  for (size_t i = 0; i < scores.size(); ++i) page_scores[page_of[i]] += scores[i], ++page_tokens[page_of[i]];
  for (int64_t p = 0; p < pages; ++p) page_scores[p] /= std::max<int64_t>(1, page_tokens[p]);
  std::vector<std::vector<int64_t>> kept(pages);
  for (int64_t p : SelectByScore(page_scores, page_tokens, cost, tokens_left, bytes_left))
    for (int64_t s = 0; s < page_tokens[p]; ++s) kept[p].push_back(s);
  return kept;
}

namespace {

at::Tensor ValidSlots(const at::Tensor& slot_scores, const at::Tensor& valid) {
  return at::arange(slot_scores.size(1), valid.options().dtype(at::kLong)).unsqueeze(0) < valid.to(at::kLong).unsqueeze(1);
}

}  // namespace

at::Tensor TopPagesByBestSlot(const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left, TopByScoreFn top) {
  const at::Tensor best = at::where(ValidSlots(slot_scores, valid), slot_scores, at::full({}, -INFINITY, slot_scores.options())).amax(1);
  return top(best, pages_left);
}

at::Tensor TopPagesByMeanSlot(const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left, TopByScoreFn top) {
  const at::Tensor in_page = ValidSlots(slot_scores, valid);
  const at::Tensor mean = at::where(in_page, slot_scores, at::zeros({}, slot_scores.options())).sum(1) / in_page.sum(1).clamp_min(1);
  return top(mean, pages_left);
}

}  // namespace streamrecon
