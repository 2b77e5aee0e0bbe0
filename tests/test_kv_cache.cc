// The dense layer cache: append + attend equals attention over the concatenation; pruning keeps
// the first and current frames and the best-scored middle tokens, in order.
#include <ATen/ATen.h>

#include <algorithm>

#include "core/errors.h"
#include "core/kv_cache.h"
#include "tests/test_util.h"

namespace streamrecon {
namespace {

TEST(DenseCache, AppendAndAttendEqualsFullAttention) {
  KvCacheOptions o;
  auto cache = MakeLayerKvCache(o);
  at::manual_seed(0);
  std::vector<at::Tensor> ks, vs;
  for (int f = 0; f < 5; ++f) {
    const at::Tensor q = at::randn({2, 7, 8}, at::kDouble), k = at::randn({2, 7, 8}, at::kDouble), v = at::randn({2, 7, 8}, at::kDouble);
    ks.push_back(k);
    vs.push_back(v);
    const at::Tensor got = cache->AppendAndAttend(q, k, v);
    const at::Tensor K = at::cat(ks, 1), V = at::cat(vs, 1);
    const at::Tensor want = at::matmul(at::softmax(at::matmul(q, K.transpose(1, 2)) / std::sqrt(8.0), -1), V);
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-12);
    EXPECT_EQ(cache->tokens(), 7 * (f + 1));
    EXPECT_EQ(cache->bytes(), 2 * 2 * 7 * (f + 1) * 8 * 8);
  }
}

TEST(DenseCache, XStreamPruneKeepsAnchorsAndTopScoredTokensInOrder) {
  KvCacheOptions o;
  o.policy = PrunePolicy::kXStream;
  o.cache_tokens = 20;
  o.pool_size = 2;
  o.special_tokens = 1;
  auto cache = MakeLayerKvCache(o);
  const int64_t n = 5;
  at::manual_seed(1);
  std::vector<double> ids;  // value channel 0 carries each token's global id
  for (int f = 0; f < 6; ++f) {
    const at::Tensor k = at::randn({2, n, 4}, at::kDouble);
    at::Tensor v = at::zeros({2, n, 4}, at::kDouble);
    for (int t = 0; t < n; ++t) v.select(1, t).fill_(f * n + t);
    const at::Tensor q = at::randn({2, n, 4}, at::kDouble);
    cache->AppendAndAttend(q, k, v);
    for (int t = 0; t < n; ++t) ids.push_back(f * n + t);
    // Expected survivors, computed independently with plain loops.
    auto [K, V] = cache->Materialize();
    const int64_t T = K.size(1);
    std::vector<double> expected_ids;
    if (T > o.cache_tokens) {
      const int64_t keep = o.cache_tokens - 2 * n;
      // pooled query rows: 1 special + groups of 2 over 4 patches = 3 rows, head-averaged
      std::vector<std::vector<double>> rows;
      auto qa = q.accessor<double, 3>();
      auto row = [&](int64_t a, int64_t b) {
        std::vector<double> r(4, 0.0);
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t t = a; t < b; ++t)
            for (int d = 0; d < 4; ++d) r[d] += qa[h][t][d] / (2.0 * (b - a));
        return r;
      };
      rows = {row(0, 1), row(1, 3), row(3, 5)};
      auto ka = K.accessor<double, 3>();
      std::vector<std::pair<double, int64_t>> scored;
      for (int64_t t = n; t < T - n; ++t) {
        double s = 0;
        for (const auto& r : rows)
          for (int d = 0; d < 4; ++d) s += r[d] * (ka[0][t][d] + ka[1][t][d]) / 2.0 / rows.size();
        scored.emplace_back(s, t);
      }
      std::sort(scored.rbegin(), scored.rend());
      std::vector<int64_t> kept;
      for (int64_t i = 0; i < keep; ++i) kept.push_back(scored[i].second);
      std::sort(kept.begin(), kept.end());
      auto va = V.accessor<double, 3>();
      for (int64_t t = 0; t < n; ++t) expected_ids.push_back(va[0][t][0]);
      for (int64_t t : kept) expected_ids.push_back(va[0][t][0]);
      for (int64_t t = T - n; t < T; ++t) expected_ids.push_back(va[0][t][0]);
    }
    cache->Prune(q, n);
    ASSERT_LE(cache->tokens(), std::max<int64_t>(o.cache_tokens, 2 * n));
    if (!expected_ids.empty()) {
      auto [K2, V2] = cache->Materialize();
      ASSERT_EQ(V2.size(1), static_cast<int64_t>(expected_ids.size()));
      for (size_t i = 0; i < expected_ids.size(); ++i) EXPECT_EQ(V2[1][i][3].item<double>(), expected_ids[i]) << "frame " << f;
    }
  }
  EXPECT_EQ(cache->tokens(), 20);
}

TEST(DenseCache, XStreamScoresPoolQueriesAndAverageHeads) {
  // 2 heads, 5 queries (1 special + 4 patches pooled by 2), D = 2.
  at::Tensor q = at::zeros({2, 5, 2}, at::kDouble);
  q[0][0][0] = 2;   // special token, head 0
  q[1][0][0] = 0;   // head 1 -> mean 1 on channel 0
  q[0][1][1] = 4;   // patches 1..2 pooled: mean over tokens then heads -> channel 1 = 1
  at::Tensor keys = at::zeros({2, 3, 2}, at::kDouble);
  keys[0][0][0] = 1; keys[1][0][0] = 1;  // token 0: k_bar = (1, 0)
  keys[0][1][1] = 2;                     // token 1: k_bar = (0, 1)
  const at::Tensor s = XStreamScores(q, keys, 2, 1);
  // Pooled rows: special (1, 0); patches(1,2) -> (0, 1); patches(3,4) -> (0, 0). Mean over 3 rows.
  EXPECT_NEAR(s[0].item<double>(), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(s[1].item<double>(), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(s[2].item<double>(), 0.0, 1e-12);
}

TEST(DenseCache, WindowKeepsTheNewestMiddleTokens) {
  KvCacheOptions o;
  o.policy = PrunePolicy::kWindow;
  o.cache_tokens = 9;
  auto cache = MakeLayerKvCache(o);
  const int64_t n = 3;
  for (int f = 0; f < 5; ++f) {
    at::Tensor v = at::full({1, n, 1}, static_cast<double>(f), at::kDouble);
    const at::Tensor q = at::zeros({1, n, 1}, at::kDouble);
    cache->AppendAndAttend(q, at::zeros({1, n, 1}, at::kDouble), v);
    cache->Prune(q, n);
  }
  // Uniform attention with zero keys averages the kept values: frames 0, 3, 4 remain.
  const at::Tensor out = cache->AppendAndAttend(at::zeros({1, 1, 1}, at::kDouble), at::zeros({1, 1, 1}, at::kDouble),
                                                at::full({1, 1, 1}, 10.0, at::kDouble));
  EXPECT_NEAR(out.item<double>(), (0 * 3 + 3 * 3 + 4 * 3 + 10) / 10.0, 1e-12);
}

TEST(DenseCache, OptionsAreChecked) {
  KvCacheOptions o;
  o.policy = PrunePolicy::kXStream;
  EXPECT_THROW(o.Check(), OptionError);
  EXPECT_THROW(ParsePrunePolicy("lru"), OptionError);
}

}  // namespace
}  // namespace streamrecon
