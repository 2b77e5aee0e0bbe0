// The pruning policies: XStreamVGGT scores, the one seeded scorer of the other policies, and the
// selection rules, written once for both backends (host rules where the choice is sequential,
// tensor rules on any device where it is a top-k, proven equal to the host rules in the tests).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/kv/format.h"

namespace streamrecon {

// XStreamVGGT's pooled queries: the first special_tokens rows as they are, the rest averaged over
// consecutive groups of pool_size (a remainder forms one more group), then averaged over heads.
// q: [H, N, D] -> [M, D].
at::Tensor PooledQueries(const at::Tensor& q, int pool_size, int special_tokens);

// XStreamVGGT token scores from pooled queries: q_bar [M, D] against head-averaged keys [H, T, D]
// (converted to q_bar's dtype). Returns [T]: the mean over pooled rows of q_bar . k_bar.
at::Tensor ScoresFromPooled(const at::Tensor& q_bar, const at::Tensor& keys);
// The same from the current queries q [H, N, D].
at::Tensor XStreamScores(const at::Tensor& q, const at::Tensor& middle_keys, int pool_size, int special_tokens);

// The policy's scores of cached units given their XStreamVGGT scores (any shape, -inf marks
// padding slots, kept as -inf): xstream / xstream-page use them; window scores by stream position
// (the flattened index); random draws uniform scores from a CPU generator seeded by seed and salt
// (the same numbers on every device).
at::Tensor PolicyScores(PrunePolicy policy, const at::Tensor& xstream_scores, uint64_t seed, uint64_t salt);

// The k highest of scores [U] (ties: the later unit first), as ascending indices (long), on the
// scores' device without a read back. k is clamped to [0, U].
at::Tensor TopByScore(const at::Tensor& scores, int64_t k);
// The positions where `mask` (bool [U]) is true, ascending (long), when the host already knows
// how many there are (`count`): placed by a running count, so nothing is read back.
at::Tensor TrueIndices(const at::Tensor& mask, int64_t count);
// A function with TopByScore's contract (e.g. a device kernel's; the page choices below take one).
using TopByScoreFn = at::Tensor (*)(const at::Tensor& scores, int64_t k);

// Chooses middle units (tokens or pages) to keep: highest score first, each taken while it fits
// the remaining token and byte allowances (< 0 = unlimited). Returns kept unit indices, ascending.
std::vector<int64_t> SelectByScore(const std::vector<double>& scores, const std::vector<int64_t>& unit_tokens,
                                   const std::vector<int64_t>& unit_bytes, int64_t tokens_left, int64_t bytes_left);

// Page-granular pruning of a dense cache: the middle tokens (scores in stream order) grouped into
// pages of k_group consecutive tokens of one frame (frames are frame_tokens long); whole pages are
// kept, highest mean score first, within tokens_left. Returns kept token indices, ascending.
std::vector<int64_t> SelectDensePages(const std::vector<double>& scores, int64_t frame_tokens, int k_group, int64_t tokens_left);

// Token-granular choice over page slots: highest score first, a slot costs one token plus a whole
// page when its page is not kept yet. page_of/slot_of give each scored slot's page and slot.
// Returns, per page (0..pages-1), the kept slots in ascending order.
std::vector<std::vector<int64_t>> SelectSlotsByScore(const std::vector<double>& scores, const std::vector<int64_t>& page_of,
                                                     const std::vector<int64_t>& slot_of, int64_t pages, int64_t page_bytes,
                                                     int64_t tokens_left, int64_t bytes_left);

// The reference choice over the middle pages' slots: whole pages by mean slot score for
// xstream-page (SelectByScore), else SelectSlotsByScore. page_of indexes [0, pages).
std::vector<std::vector<int64_t>> SelectPageSlots(PrunePolicy policy, const std::vector<double>& scores,
                                                  const std::vector<int64_t>& page_of, const std::vector<int64_t>& slot_of,
                                                  int64_t pages, int64_t page_bytes, int64_t tokens_left, int64_t bytes_left);

// SelectSlotsByScore's choice when only bytes are limited, as tensor ops on any device (no read
// back): the first slot of a page opens it, and an open page keeps every later slot, so the kept
// pages are the `pages_left` pages with the highest best-slot score (ties: the later page first,
// as SelectSlotsByScore's order), each kept whole. slot_scores [P, G]; valid [P] (int) counts the
// valid slots of each page, the first ones. Returns the kept page indices ascending (long).
at::Tensor TopPagesByBestSlot(const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left, TopByScoreFn top = TopByScore);

// SelectPageSlots' choice for xstream-page when only bytes are limited, as tensor ops: the
// `pages_left` pages with the highest mean score over their valid slots. Same arguments.
at::Tensor TopPagesByMeanSlot(const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left, TopByScoreFn top = TopByScore);

}  // namespace streamrecon
