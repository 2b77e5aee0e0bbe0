// The KV cache: dense and quantized layer caches, packing, quantization error bounds, pruning,
// the byte budget, and the stability of kept tokens.
#include <ATen/ATen.h>

#include <algorithm>
#include <deque>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/errors.h"
#include "core/kv/budget.h"
#include "core/kv/cache.h"
#include "core/kv/paged_kv.h"
#include "core/kv/policy.h"
#include "tests/kv_reference.h"
#include "tests/test_util.h"

namespace streamrecon {
namespace {

at::Tensor Reference(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) {
  return at::matmul(at::softmax(at::matmul(q, K.transpose(1, 2)) / std::sqrt(static_cast<double>(q.size(2))), -1), V);
}

TEST(DenseCache, ForwardEqualsFullAttention) {
  auto cache = MakeLayerKvCache(KvCacheOptions{});
  at::manual_seed(0);
  std::vector<at::Tensor> ks, vs;
  for (int f = 0; f < 5; ++f) {
    const at::Tensor q = at::randn({2, 7, 8}, at::kDouble), k = at::randn({2, 7, 8}, at::kDouble), v = at::randn({2, 7, 8}, at::kDouble);
    ks.push_back(k);
    vs.push_back(v);
    const at::Tensor got = cache->Forward(q, k, v);
    EXPECT_LE((got - Reference(q, at::cat(ks, 1), at::cat(vs, 1))).abs().max().item<double>(), 1e-12);
    EXPECT_EQ(cache->tokens(), 7 * (f + 1));
    EXPECT_EQ(cache->bytes(), 2 * 2 * 7 * (f + 1) * 8 * 8);
  }
}

// Survivors of XStreamVGGT pruning, computed independently with plain loops.
std::vector<double> ExpectedSurvivors(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V, int64_t n, int64_t cap,
                                      int pool, int special) {
  const int64_t H = K.size(0), T = K.size(1), D = K.size(2);
  std::vector<std::vector<double>> rows;
  auto qa = q.accessor<double, 3>();
  auto row = [&](int64_t a, int64_t b) {
    std::vector<double> r(D, 0.0);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = a; t < b; ++t)
        for (int64_t d = 0; d < D; ++d) r[d] += qa[h][t][d] / (H * static_cast<double>(b - a));
    return r;
  };
  for (int64_t t = 0; t < std::min<int64_t>(special, n); ++t) rows.push_back(row(t, t + 1));
  for (int64_t t = special; t < n; t += pool) rows.push_back(row(t, std::min(n, t + pool)));
  auto ka = K.accessor<double, 3>();
  std::vector<std::pair<double, int64_t>> scored;
  for (int64_t t = n; t < T; ++t) {
    double s = 0;
    for (const auto& r : rows)
      for (int64_t d = 0; d < D; ++d) {
        double kbar = 0;
        for (int64_t h = 0; h < H; ++h) kbar += ka[h][t][d] / H;
        s += r[d] * kbar / rows.size();
      }
    scored.emplace_back(s, t);
  }
  std::sort(scored.rbegin(), scored.rend());
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < cap - 2 * n && i < static_cast<int64_t>(scored.size()); ++i) kept.push_back(scored[i].second);
  std::sort(kept.begin(), kept.end());
  std::vector<double> ids;
  auto va = V.accessor<double, 3>();
  for (int64_t t = 0; t < n; ++t) ids.push_back(va[0][t][0]);
  for (int64_t t : kept) ids.push_back(va[0][t][0]);
  return ids;  // the current frame is appended after these
}

TEST(DenseCache, XStreamPruneKeepsAnchorsAndTopScoredTokensInOrder) {
  KvCacheOptions o;
  o.policy = PrunePolicy::kXStream;
  o.cache_tokens = 20;
  o.pool_size = 2;
  o.special_tokens = 1;
  auto cache = MakeLayerKvCache(o);
  cache->SetCapacity({20, -1});
  const int64_t n = 5;
  at::manual_seed(1);
  for (int f = 0; f < 8; ++f) {
    const at::Tensor k = at::randn({2, n, 4}, at::kDouble), q = at::randn({2, n, 4}, at::kDouble);
    at::Tensor v = at::zeros({2, n, 4}, at::kDouble);
    for (int t = 0; t < n; ++t) v.select(1, t).fill_(f * n + t);  // every channel carries the token id
    auto [K, V] = cache->Materialize();
    const bool prunes = K.defined() && K.size(1) + n > o.cache_tokens;
    std::vector<double> expected;
    if (prunes) expected = ExpectedSurvivors(q, K, V, n, o.cache_tokens, 2, 1);
    cache->Forward(q, k, v);
    ASSERT_LE(cache->tokens(), o.cache_tokens);
    if (prunes) {
      for (int t = 0; t < n; ++t) expected.push_back(f * n + t);
      auto [K2, V2] = cache->Materialize();
      ASSERT_EQ(V2.size(1), static_cast<int64_t>(expected.size()));
      for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(V2[1][i][3].item<double>(), expected[i]) << "frame " << f;
    }
  }
  EXPECT_EQ(cache->tokens(), 20);
}

TEST(DenseCache, XStreamScoresPoolQueriesAndAverageHeads) {
  at::Tensor q = at::zeros({2, 5, 2}, at::kDouble);
  q[0][0][0] = 2;  // special token: head mean (1, 0)
  q[0][1][1] = 4;  // patches 1..2 pooled: mean over tokens then heads -> (0, 1)
  at::Tensor keys = at::zeros({2, 3, 2}, at::kDouble);
  keys[0][0][0] = 1;
  keys[1][0][0] = 1;  // token 0: k_bar = (1, 0)
  keys[0][1][1] = 2;  // token 1: k_bar = (0, 1)
  const at::Tensor s = XStreamScores(q, keys, 2, 1);
  EXPECT_NEAR(s[0].item<double>(), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(s[1].item<double>(), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(s[2].item<double>(), 0.0, 1e-12);
}

TEST(DenseCache, WindowKeepsTheNewestMiddleTokens) {
  KvCacheOptions o;
  o.policy = PrunePolicy::kWindow;
  o.cache_tokens = 9;
  auto cache = MakeLayerKvCache(o);
  cache->SetCapacity({9, -1});
  const int64_t n = 3;
  for (int f = 0; f < 5; ++f) {
    const at::Tensor q = at::zeros({1, n, 1}, at::kDouble);
    cache->Forward(q, at::zeros({1, n, 1}, at::kDouble), at::full({1, n, 1}, static_cast<double>(f), at::kDouble));
  }
  auto [K, V] = cache->Materialize();
  ASSERT_EQ(V.size(1), 9);
  const std::vector<double> expected{0, 0, 0, 3, 3, 3, 4, 4, 4};
  for (int t = 0; t < 9; ++t) EXPECT_EQ(V[0][t][0].item<double>(), expected[t]);
}

// Pruning evicts in place: the kept rows stay where they are and the current frame takes the freed
// ones, so the buffer leaves stream order. What the cache holds (Materialize, in stream order) and
// what it attends to must still be exactly the rule's tokens, also when the capacity shrinks (more
// rows freed than a frame takes: a compaction) and grows again.
TEST(DenseCache, EvictionKeepsTheRulesTokensThroughCapacityChanges) {
  KvCacheOptions o;
  o.policy = PrunePolicy::kWindow;
  o.cache_tokens = 100;
  auto cache = MakeLayerKvCache(o);
  const int64_t n = 3;
  std::vector<at::Tensor> held_k, held_v;  // the window rule's tokens, stream order, one entry per token
  for (int f = 0; f < 14; ++f) {
    const int64_t cap = f < 6 ? 9 : (f < 9 ? 6 : 12);
    cache->SetCapacity({cap, -1});
    at::manual_seed(f);
    const at::Tensor q = at::randn({2, n, 4}, at::kDouble), k = at::randn({2, n, 4}, at::kDouble), v = at::randn({2, n, 4}, at::kDouble);
    // The frame attends to what the cache held, then the rule keeps the first frame and the newest
    // middle tokens that leave room for this frame, which is appended.
    std::vector<at::Tensor> ks = held_k, vs = held_v;
    for (int64_t t = 0; t < n; ++t) ks.push_back(k.narrow(1, t, 1)), vs.push_back(v.narrow(1, t, 1));
    const at::Tensor got = cache->Forward(q, k, v);
    EXPECT_LE((got - Reference(q, at::cat(ks, 1), at::cat(vs, 1))).abs().max().item<double>(), 1e-12) << "frame " << f;
    if (f > 0) {
      const int64_t first = n, middle = static_cast<int64_t>(held_k.size()) - first;
      const int64_t keep = std::max<int64_t>(0, std::min<int64_t>(cap - first - n, middle));
      held_k.erase(held_k.begin() + first, held_k.end() - keep);
      held_v.erase(held_v.begin() + first, held_v.end() - keep);
    }
    for (int64_t t = 0; t < n; ++t) held_k.push_back(k.narrow(1, t, 1)), held_v.push_back(v.narrow(1, t, 1));
    auto [K, V] = cache->Materialize();
    ASSERT_EQ(K.size(1), static_cast<int64_t>(held_k.size())) << "frame " << f;
    EXPECT_TRUE(at::equal(K, at::cat(held_k, 1))) << "frame " << f;
    EXPECT_TRUE(at::equal(V, at::cat(held_v, 1))) << "frame " << f;
    EXPECT_EQ(cache->tokens(), static_cast<int64_t>(held_k.size()));
  }
}

// The camera trunk's fixed-slot cache against the reference cache it replaces: the same outputs,
// the same kept tokens in stream order (ties and random draws included), the same counts, under
// token caps (down to 0), byte caps and both, in float64, with bf16 storage and in bf16; steady
// (graph_ready) from the first call that evicts, never for the random policy.
TEST(SlotCache, KeepsAndAttendsLikeTheReferenceCache) {
  struct Case {
    PrunePolicy policy;
    LayerCapacity capacity;
    at::ScalarType work;
    CacheFormat format;
    bool ties;
  };
  const int64_t heads = 2, dim = 8, f64_row = 2 * heads * dim * 8, bf16_row = 2 * heads * dim * 2;
  const at::ScalarType f64 = at::kDouble;
  const CacheFormat dense = CacheFormat::kDense;
  const std::vector<Case> cases{
      {PrunePolicy::kXStream, {7, -1}, f64, dense, false},
      {PrunePolicy::kXStreamPage, {7, -1}, f64, dense, false},
      {PrunePolicy::kWindow, {6, -1}, f64, dense, false},
      {PrunePolicy::kRandom, {9, -1}, f64, dense, false},
      {PrunePolicy::kXStream, {-1, 5 * f64_row}, f64, dense, false},
      {PrunePolicy::kXStream, {9, 6 * f64_row}, f64, dense, false},
      {PrunePolicy::kXStream, {7, -1}, f64, dense, true},
      {PrunePolicy::kXStream, {2, -1}, f64, dense, false},
      {PrunePolicy::kXStream, {1, -1}, f64, dense, false},
      {PrunePolicy::kXStream, {0, -1}, f64, dense, false},
      {PrunePolicy::kXStream, {8, -1}, at::kFloat, CacheFormat::kBf16, false},
      {PrunePolicy::kXStream, {-1, 7 * bf16_row}, at::kFloat, CacheFormat::kBf16, false},
      {PrunePolicy::kXStream, {8, -1}, at::kBFloat16, dense, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(ToString(c.policy) + " tokens " + std::to_string(c.capacity.tokens) + " bytes " + std::to_string(c.capacity.bytes) + " " +
                 c10::toString(c.work) + " " + ToString(c.format) + (c.ties ? " ties" : ""));
    KvCacheOptions o;
    o.policy = c.policy;
    o.cache_tokens = 100;  // (bounded; the layer capacity below decides)
    o.special_tokens = 1;
    o.seed = 3;
    o.format = c.format;
    auto reference = MakeLayerKvCache(o, c10::kCPU, KvBackendKind::kReference);
    auto slots = MakeSlotKvCache(o);
    reference->SetCapacity(c.capacity);
    slots->SetCapacity(c.capacity);
    // bf16 arithmetic: the reference merges two partial softmaxes, the slots take one.
    const double tolerance = c.work == at::kBFloat16 ? 3e-2 : c.work == at::kFloat ? 1e-5 : 1e-12;
    at::manual_seed(11);
    int first_eviction = -1, became_ready = -1;
    int64_t previous_tokens = 0;
    for (int call = 0; call < 40; ++call) {
      // Ties: small integers, so that every score is exact whatever the summation order.
      const at::Tensor q = c.ties ? at::randint(-3, 4, {heads, 1, dim}, c.work) : at::randn({heads, 1, dim}, c.work);
      const at::Tensor k = c.ties ? at::ones({heads, 1, dim}, c.work) : at::randn({heads, 1, dim}, c.work);
      const at::Tensor v = at::randn({heads, 1, dim}, c.work);
      const at::Tensor want = reference->Forward(q, k, v), got = slots->Forward(q, k, v);
      ASSERT_LE((got - want).abs().max().item<double>(), tolerance) << "call " << call;
      ASSERT_EQ(slots->tokens(), reference->tokens()) << "call " << call;
      ASSERT_EQ(slots->bytes(), reference->bytes()) << "call " << call;
      const auto [K, V] = reference->Materialize();
      const auto [K2, V2] = slots->Materialize();
      ASSERT_TRUE(at::equal(K2, K) && at::equal(V2, V)) << "kept tokens differ at call " << call;
      if (call > 0 && reference->tokens() == previous_tokens && first_eviction < 0) first_eviction = call;
      previous_tokens = reference->tokens();
      if (slots->graph_ready() && became_ready < 0) became_ready = call;
      if (became_ready >= 0) {
        EXPECT_TRUE(slots->graph_ready()) << "stays steady; call " << call;
      }
    }
    ASSERT_GE(first_eviction, 0) << "the stream never filled the cache";
    if (c.policy == PrunePolicy::kRandom) {
      EXPECT_EQ(became_ready, -1);  // its draws are host data
      EXPECT_THROW(slots->Replayed(), Error);
    } else {
      EXPECT_EQ(became_ready, first_eviction);
      const int64_t tokens = slots->tokens(), bytes = slots->bytes();
      slots->Replayed();  // the host side of a replayed call: nothing it counts changes
      EXPECT_EQ(slots->tokens(), tokens);
      EXPECT_EQ(slots->bytes(), bytes);
      EXPECT_TRUE(slots->graph_ready());
    }
  }
}

TEST(SlotCache, RefusesWhatItCannotHold) {
  KvCacheOptions o;
  o.cache_tokens = 10;
  EXPECT_THROW(MakeSlotKvCache(o), OptionError);  // no pruning policy: slots would overflow
  o.policy = PrunePolicy::kXStream;
  o.format = CacheFormat::kKivi4;
  EXPECT_THROW(MakeSlotKvCache(o), OptionError);  // pages are the layer cache's job
  o.format = CacheFormat::kDense;
  auto cache = MakeSlotKvCache(o);
  const at::Tensor x = at::zeros({1, 1, 4}, at::kDouble);
  EXPECT_THROW(cache->Forward(x, x, x), Error);  // no capacity set: unbounded
  cache->SetCapacity({4, -1});
  cache->Forward(x, x, x);
  EXPECT_THROW(cache->Forward(x, at::zeros({1, 2, 4}, at::kDouble), at::zeros({1, 2, 4}, at::kDouble)), Error);  // two tokens
  EXPECT_THROW(cache->SetCapacity({5, -1}), Error);  // fixed once it holds tokens
  cache->Clear();
  cache->SetCapacity({5, -1});
  EXPECT_EQ(cache->tokens(), 0);
}

// ---- quantization primitives -----------------------------------------------------------------

TEST(Quant, PackUnpackIsBitExact) {
  at::manual_seed(2);
  for (int bits : {2, 4})
    for (int64_t n : {4, 8, 64, 128}) {
      const at::Tensor codes = at::randint(0, 1 << bits, {n}, at::kByte);
      std::vector<uint8_t> packed(n * bits / 8), back(n);
      PackCodes(codes.data_ptr<uint8_t>(), n, bits, packed.data());
      UnpackCodes(packed.data(), n, bits, back.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[i], codes[i].item<uint8_t>()) << bits << " bits, n " << n;
    }
}

// A group's step must be (max - min) / (2^bits - 1), up to the fp16 rounding of the stored zero
// (rounded down, at most one fp16 ulp of min) and scale (rounded up, at most two ulps): an error
// bound of half "the step the code chose" alone would pass a step ten times too coarse.
void ExpectPinnedStep(float step, float lo, float hi, int bits) {
  const float levels = static_cast<float>((1 << bits) - 1), exact = (hi - lo) / levels;
  ASSERT_GE(step, exact * (1 - 1e-6f)) << "group [" << lo << ", " << hi << "], " << bits << " bits";
  ASSERT_LE(step, (exact + std::abs(lo) * 1e-3f / levels) * (1 + 2e-3f) + 1e-7f) << "group [" << lo << ", " << hi << "], " << bits << " bits";
}

TEST(Quant, ParamsCoverTheRangeAndErrorIsAtMostHalfAStep) {
  at::manual_seed(3);
  for (int bits : {2, 4}) {
    for (int trial = 0; trial < 2000; ++trial) {
      const float a = at::randn({1}).item<float>() * 3, b = a + std::abs(at::randn({1}).item<float>()) * (trial % 7);
      const QuantParams p = MakeQuantParams(a, b, bits);
      const float scale = HalfBitsToFloat(p.scale), zero = HalfBitsToFloat(p.zero);
      ASSERT_LE(zero, a);
      ASSERT_GE(zero + scale * ((1 << bits) - 1), b);
      ExpectPinnedStep(scale, a, b, bits);
      for (float x : {a, b, (a + b) / 2, a + (b - a) * 0.3f}) {
        const float err = std::abs(DequantizeValue(QuantizeValue(x, p, bits), p) - x);
        ASSERT_LE(err, scale / 2 * (1 + 1e-5f) + 1e-7f) << "x " << x << " in [" << a << ", " << b << "]";
      }
    }
  }
}

TEST(Quant, HadamardIsOrthogonalAndSymmetric) {
  const at::Tensor h = HadamardMatrix(64, at::kDouble);
  EXPECT_LE((at::matmul(h, h) - at::eye(64, at::kDouble)).abs().max().item<double>(), 1e-12);
  EXPECT_TRUE(at::equal(h, h.t()));
  EXPECT_THROW(HadamardMatrix(48, at::kDouble), OptionError);
}

// Every page of every format and group size, partial groups included, dequantizes within half a
// step of its own group: K per channel per page, V per token per channel group.
TEST(Quant, FramesRoundTripWithinHalfAStepOfTheirGroups) {
  at::manual_seed(4);
  for (int bits : {2, 4})
    for (int G : {8, 32, 64})
      for (int Gv : {16, 64})
        for (int64_t N : {25, 64, 100}) {
          const int64_t H = 2, D = 64;
          at::Tensor k = at::randn({H, N, D}), v = at::randn({H, N, D}) * 3;
          k.select(1, 1).mul_(20);  // an outlier token
          PageLayout layout{2, 64, G, bits, Gv, false};
          const PagedKv pages = QuantizeFrame(k, v, {}, layout, 0);
          ASSERT_EQ(pages.pages(), (N + G - 1) / G);
          auto [kd, vd] = DequantizePages(pages);
          ASSERT_EQ(kd.size(1), N);
          const auto* kp = reinterpret_cast<const QuantParams*>(pages.k_params.data_ptr<int16_t>());
          const auto* vp = reinterpret_cast<const QuantParams*>(pages.v_params.data_ptr<int16_t>());
          for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < N; ++t)
              for (int64_t d = 0; d < D; ++d) {
                const int64_t p = t / G, s = t % G;
                const float k_step = HalfBitsToFloat(kp[(p * H + h) * D + d].scale);
                const float v_step = HalfBitsToFloat(vp[((p * H + h) * G + s) * (D / Gv) + d / Gv].scale);
                ASSERT_LE(std::abs(kd[h][t][d].item<float>() - k[h][t][d].item<float>()), k_step / 2 * 1.0001f + 1e-6f);
                ASSERT_LE(std::abs(vd[h][t][d].item<float>() - v[h][t][d].item<float>()), v_step / 2 * 1.0001f + 1e-6f);
              }
          // Each group's step is pinned to its own range: K per page and channel, V per token and
          // channel group (partial pages: over their real tokens only).
          for (int64_t h = 0; h < H; ++h)
            for (int64_t p = 0; p < pages.pages(); ++p) {
              const int64_t t0 = p * G, tn = std::min<int64_t>(G, N - t0);
              const at::Tensor kg = k[h].narrow(0, t0, tn);
              for (int64_t d = 0; d < D; ++d)
                ExpectPinnedStep(HalfBitsToFloat(kp[(p * H + h) * D + d].scale), kg.select(1, d).min().item<float>(),
                                 kg.select(1, d).max().item<float>(), bits);
              for (int64_t s = 0; s < tn; ++s)
                for (int64_t g = 0; g < D / Gv; ++g) {
                  const at::Tensor vg = v[h][t0 + s].narrow(0, g * Gv, Gv);
                  ExpectPinnedStep(HalfBitsToFloat(vp[((p * H + h) * G + s) * (D / Gv) + g].scale), vg.min().item<float>(),
                                   vg.max().item<float>(), bits);
                }
            }
          // Partial last page: the padding slots hold zero codes and are not counted.
          EXPECT_EQ(pages.meta[pages.pages() - 1][0].item<int32_t>(), N - (pages.pages() - 1) * G);
        }
}

TEST(Quant, PageLayoutSizes) {
  // 1B model, OScaR INT2, G 32, Gv 64: 16 KiB codes + 4 KiB K params + 2 KiB V params + norms + meta.
  PageLayout layout{16, 64, 32, 2, 64, true};
  EXPECT_EQ(layout.page_bytes(), 16384 + 4096 + 2048 + 128 + 8);
  EXPECT_NEAR(EffectiveBits(layout.page_bytes(), 32, 16, 64), 2.77, 0.01);
}

// ---- quantized caches --------------------------------------------------------------------------

KvCacheOptions Quantized(CacheFormat f, PrunePolicy p) {
  KvCacheOptions o;
  o.format = f;
  o.policy = p;
  o.k_group = 8;
  o.v_group = 32;
  if (p != PrunePolicy::kNone) o.cache_tokens = 1 << 20;  // the tests set the real capacity per layer
  return o;
}

TEST(QuantizedCache, AttentionIsCloseToTheFullPrecisionCache) {
  at::manual_seed(5);
  for (CacheFormat f : {CacheFormat::kKivi4, CacheFormat::kOscar4, CacheFormat::kKivi2, CacheFormat::kOscar2}) {
    auto cache = MakeLayerKvCache(Quantized(f, PrunePolicy::kNone));
    auto dense = MakeLayerKvCache(KvCacheOptions{});
    double worst = 0;
    for (int frame = 0; frame < 4; ++frame) {
      const at::Tensor q = at::randn({2, 20, 64}), k = at::randn({2, 20, 64}), v = at::randn({2, 20, 64});
      const at::Tensor a = cache->Forward(q, k, v), b = dense->Forward(q, k, v);
      worst = std::max(worst, ((a - b).norm() / b.norm()).item<double>());
    }
    // Random Gaussian K/V are a hard case (no structure): 4-bit stays within 10%, 2-bit within 50%.
    EXPECT_LE(worst, FormatBits(f) == 4 ? 0.10 : 0.50) << ToString(f);
    EXPECT_EQ(cache->tokens(), 80);
  }
}

TEST(QuantizedCache, KeptTokensReadBackIdenticallyOnEveryLaterFrame) {
  at::manual_seed(6);
  for (PrunePolicy policy : {PrunePolicy::kXStream, PrunePolicy::kXStreamPage})
    for (CacheFormat f : {CacheFormat::kKivi2, CacheFormat::kOscar4}) {
      KvCacheOptions o = Quantized(f, policy);
      auto cache = MakeLayerKvCache(o);
      cache->SetCapacity({60, -1});
      std::map<double, std::pair<at::Tensor, at::Tensor>> first_seen;  // token id -> (k, v) as first stored
      for (int frame = 0; frame < 10; ++frame) {
        const at::Tensor q = at::randn({2, 20, 64}), k = at::randn({2, 20, 64});
        at::Tensor v = at::randn({2, 20, 64});
        v.select(2, 0).copy_(at::arange(20, at::kFloat).mul(1.0f).add(frame * 20).unsqueeze(0).expand({2, 20}));
        cache->Forward(q, k, v);
        auto [K, V] = cache->Materialize();
        ASSERT_LE(cache->tokens(), 60);
        for (int64_t t = 0; t < V.size(1); ++t) {
          const double id = std::round(V[0][t][0].item<double>() * 1000) / 1000;
          auto it = first_seen.find(id);
          if (it == first_seen.end()) {
            first_seen.emplace(id, std::make_pair(K.select(1, t).clone(), V.select(1, t).clone()));
          } else {
            ASSERT_TRUE(at::equal(it->second.first, K.select(1, t))) << ToString(f) << " token " << id << " frame " << frame;
            ASSERT_TRUE(at::equal(it->second.second, V.select(1, t))) << ToString(f) << " token " << id;
          }
        }
      }
    }
}

// The selection rule, brute force, from the spec (kv_cache.md section 1) and not from the product's
// selection functions: the current frame's queries pooled (first special_tokens rows as they are,
// the rest in groups of pool_size, then averaged over heads) score each cached middle token by the
// mean of their dot products with its head-averaged key, as stored; a token is kept iff fewer than
// `middle` candidates outscore it, and (xstream-page) a page iff fewer than middle / G pages have
// a higher mean score (scores: tests/kv_reference.h). Tokens carry their id in a constant V group,
// which quantizes exactly.
TEST(QuantizedCache, KeepsExactlyTheTokensAndPagesTheRuleSelects) {
  at::manual_seed(12);
  const int64_t H = 2, N = 32, D = 64, cap = 4 * N;  // middle = 2 frames' worth of tokens
  int checked = 0;
  for (PrunePolicy policy : {PrunePolicy::kXStream, PrunePolicy::kXStreamPage})
    for (CacheFormat f : {CacheFormat::kKivi4, CacheFormat::kKivi2, CacheFormat::kOscar4, CacheFormat::kOscar2}) {
      KvCacheOptions o = Quantized(f, policy);  // K group 8 (4 full pages per frame), V group 32
      auto cache = MakeLayerKvCache(o);
      cache->SetCapacity({cap, -1});
      const at::Tensor had = HadamardMatrix(D, at::kFloat);
      for (int frame = 0; frame < 8; ++frame) {
        const at::Tensor q = at::randn({H, N, D}), k = at::randn({H, N, D});
        at::Tensor v = at::randn({H, N, D});
        v.narrow(2, 0, 32).copy_(at::arange(N, at::kFloat).add(frame * N).view({1, N, 1}).expand({H, N, 32}));
        auto [K, V] = cache->Materialize();  // as stored (OScaR: the rotated space, norms applied)
        std::set<int64_t> expected;
        if (frame > 0) {
          std::vector<int64_t> ids;
          std::vector<double> scores;
          const std::vector<double> all = testing::BruteForceScores(IsOscar(f) ? at::matmul(q, had) : q, K, o.pool_size, o.special_tokens);
          for (int64_t t = 0; t < V.size(1); ++t) {
            const int64_t id = std::llround(V[0][t][0].item<double>());
            if (id < N) continue;  // the first frame is protected
            ids.push_back(id);
            scores.push_back(all[t]);
          }
          const int64_t middle = cap - 2 * N, candidates = static_cast<int64_t>(ids.size());
          if (candidates <= middle) {
            expected.insert(ids.begin(), ids.end());
          } else if (policy == PrunePolicy::kXStream) {
            for (int64_t i = 0; i < candidates; ++i) {
              int64_t better = 0;
              for (int64_t j = 0; j < candidates; ++j) better += scores[j] > scores[i];
              if (better < middle) expected.insert(ids[i]);
            }
          } else {  // pages: the 8 consecutive ids of one frame page (ids are page-aligned here)
            std::map<int64_t, std::pair<double, int>> pages;
            for (int64_t i = 0; i < candidates; ++i) pages[ids[i] / 8].first += scores[i], pages[ids[i] / 8].second++;
            for (const auto& [page, sum] : pages) {
              int64_t better = 0;
              for (const auto& [other, other_sum] : pages) better += other_sum.first / other_sum.second > sum.first / sum.second;
              if (better < middle / 8)
                for (int64_t i = 0; i < candidates; ++i)
                  if (ids[i] / 8 == page) expected.insert(ids[i]);
            }
          }
        }
        cache->Forward(q, k, v);
        auto [K2, V2] = cache->Materialize();
        std::set<int64_t> kept;
        for (int64_t t = 0; t < V2.size(1); ++t) {
          const int64_t id = std::llround(V2[0][t][0].item<double>());
          ASSERT_EQ(V2[0][t][0].item<double>(), static_cast<double>(id)) << "ids are stored exactly";
          if (id >= N && id < frame * N) kept.insert(id);
        }
        if (frame > 0) {
          EXPECT_EQ(kept, expected) << ToString(policy) << " " << ToString(f) << " frame " << frame;
          ++checked;
        }
      }
    }
  EXPECT_EQ(checked, 2 * 4 * 7);
}

TEST(QuantizedCache, ByteCapacityIsNeverExceeded) {
  at::manual_seed(7);
  for (PrunePolicy policy : {PrunePolicy::kXStream, PrunePolicy::kXStreamPage, PrunePolicy::kWindow, PrunePolicy::kRandom}) {
    KvCacheOptions o = Quantized(CacheFormat::kOscar2, policy);
    const int64_t frame_bytes = FrameBytes(o, 2, 64, 21, 4, false);
    auto cache = MakeLayerKvCache(o);
    cache->SetCapacity({-1, 5 * frame_bytes});
    for (int frame = 0; frame < 12; ++frame) {
      cache->Forward(at::randn({2, 21, 64}), at::randn({2, 21, 64}), at::randn({2, 21, 64}));
      ASSERT_LE(cache->bytes(), 5 * frame_bytes) << ToString(policy) << " frame " << frame;
    }
    EXPECT_GT(cache->bytes(), 3 * frame_bytes) << ToString(policy);  // it does use the room it has
  }
}

// The tensor form of the bytes-only token-granular choice (what the CUDA cache runs on the device)
// keeps the same pages as SelectSlotsByScore, whole, including ties between pages.
TEST(Selection, TopPagesByBestSlotEqualsTheGreedyChoiceUnderAByteLimit) {
  at::manual_seed(7);
  const int64_t page_bytes = 1000;
  int checked = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t pages = 1 + trial % 37, slots = trial % 2 ? 32 : 16;
    const at::Tensor valid = at::randint(1, slots + 1, {pages}, at::kInt);
    // Few distinct values on odd trials: many ties within and across pages.
    at::Tensor scores = at::randn({pages, slots}, at::kDouble);
    if (trial % 2) scores = at::round(scores * 2) / 2;
    std::vector<double> flat;
    std::vector<int64_t> page_of, slot_of;
    for (int64_t p = 0; p < pages; ++p)
      for (int64_t s = 0; s < valid[p].item<int>(); ++s) {
        flat.push_back(scores[p][s].item<double>());
        page_of.push_back(p);
        slot_of.push_back(s);
      }
    const int64_t bytes_left = (trial * 7919) % ((pages + 2) * page_bytes);  // from less than one page to more than all
    const auto greedy = SelectSlotsByScore(flat, page_of, slot_of, pages, page_bytes, -1, bytes_left);
    std::vector<int64_t> expected;
    for (int64_t p = 0; p < pages; ++p) {
      if (greedy[p].empty()) continue;
      expected.push_back(p);
      ASSERT_EQ(static_cast<int64_t>(greedy[p].size()), valid[p].item<int>()) << "an opened page keeps every valid slot";
    }
    // Padding slots carry scores that must not count.
    at::Tensor padded = scores.clone();
    for (int64_t p = 0; p < pages; ++p) padded[p].narrow(0, valid[p].item<int>(), slots - valid[p].item<int>()).fill_(1e9);
    const at::Tensor kept = TopPagesByBestSlot(padded, valid, bytes_left / page_bytes);
    ASSERT_EQ(kept.scalar_type(), at::kLong);
    EXPECT_EQ(std::vector<int64_t>(kept.data_ptr<int64_t>(), kept.data_ptr<int64_t>() + kept.numel()), expected)
        << "trial " << trial << ": " << pages << " pages, " << bytes_left << " bytes left";
    ++checked;
  }
  EXPECT_EQ(checked, 200);
}

TEST(Budget, PlansFramesAndNamesTheMinimum) {
  CacheGeometry g{4, 2, 64, 2, 256, 4, 4};
  KvCacheOptions o;
  o.policy = PrunePolicy::kXStream;
  o.format = CacheFormat::kBf16;
  o.budget_bytes = 10 << 20;
  const BudgetPlan plan = PlanBudget(o, g, 100);
  const int64_t frame = 100 * 2 * 2 * 64 * 2, trunk = 2 * 4 * 2 * 256 * 2;
  EXPECT_EQ(plan.frames, static_cast<int64_t>((10 << 20) / (4 * frame + trunk)));
  EXPECT_LE(plan.peak_bytes, o.budget_bytes);
  EXPECT_EQ(plan.global.bytes, plan.frames * frame);
  o.budget_bytes = 1024;
  try {
    PlanBudget(o, g, 100);
    FAIL();
  } catch (const BudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("minimum"), std::string::npos) << e.what();
  }
}

// The bound a GPU paged cache keeps of its tokens while the exact counts lag on the device
// (layer_cache.cc): whole pages dropped at random (with partial pages, as frames of 1041 tokens
// leave), frames appended, copies of the counts landing 0 to several frames late (and sometimes an
// exact read): the bound never passes the tokens held, the rows taken as certain never pass the
// rows there are, and the bound trails the count by no more than the slack of the frames whose
// copies have not landed.
TEST(TokenFloor, NeverAboveTheTokensHeldAndCloseOnceCopiesLand) {
  std::mt19937 rng(5);
  const int64_t slots = 32, n = 1041, add = CeilDiv(n, slots);
  int64_t worst_gap = 0, changes = 0, checked = 0;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int64_t> pages;  // each page's valid tokens
    TokenFloor floor;
    auto held = [&] { return std::accumulate(pages.begin(), pages.end(), int64_t{0}); };
    auto append = [&] {
      for (int64_t i = 0; i < add; ++i) pages.push_back(std::min(slots, n - i * slots));
      floor.Append(n);
    };
    for (int f = 0; f < 17; ++f) append();
    floor.SetExact(held());
    std::deque<std::pair<TokenFloor::Mark, int64_t>> copies;  // queued, with the count each will show
    int64_t certain = 0;
    for (int frame = 0; frame < 300; ++frame) {
      for (int64_t d = 0; d < add; ++d) pages.erase(pages.begin() + static_cast<int64_t>(rng() % pages.size()));
      floor.DropPages(add, slots);
      append();
      copies.emplace_back(floor.mark(), held());
      for (int64_t land = rng() % 3; land > 0 && !copies.empty(); --land) {
        floor.Landed(copies.front().first, copies.front().second);
        copies.pop_front();
      }
      if (rng() % 50 == 0) floor.SetExact(held());
      ASSERT_LE(floor.value(), held()) << "trial " << trial << " frame " << frame;
      const int64_t next = ChooseCertainRows(n, floor.value(), certain, 2048, 256);
      changes += next != certain;
      certain = next;
      ASSERT_LE(certain, n + held() - 1) << "trial " << trial << " frame " << frame;
      ASSERT_EQ(certain % 2048, 0);
      // behind by at most a page's slots for each page dropped since the newest landed copy
      const int64_t unlanded = static_cast<int64_t>(copies.size());
      EXPECT_LE(held() - floor.value(), (unlanded + 1) * add * slots) << "trial " << trial << " frame " << frame;
      worst_gap = std::max(worst_gap, held() - floor.value());
      ++checked;
    }
  }
  std::printf("[ info ] token floor: %lld frames, at most %lld tokens below the count, certain rows changed %lld times\n",
              static_cast<long long>(checked), static_cast<long long>(worst_gap), static_cast<long long>(changes));
}

// A byte budget rounds a dense cache's middle down so that the next frame's attention rows (first
// frame, middle, the frame kept and the next one) are whole tiles of 128 (cuDNN's cost per row is
// higher otherwise); a token cap (the reference's) keeps its exact count; frames of fewer than 128
// tokens are not rounded.
TEST(LayerBudget, ByteBudgetsHoldWholeTilesOfAttentionRows) {
  EXPECT_EQ(TileAlignedLeft(15615, 3123), 15565);  // the 1B model at 518x392, 1.75 GB: 18,738 rows -> 18,688
  EXPECT_EQ((3123 + TileAlignedLeft(15615, 3123)) % kAttentionRowTile, 0);
  EXPECT_EQ(TileAlignedLeft(100, 2082), 94);
  EXPECT_EQ(TileAlignedLeft(5, 2082), 5);    // (2087 is 39 rows over a tile: more than the middle)
  EXPECT_EQ(TileAlignedLeft(39, 2048), 39);  // (the whole middle would go for the tile: kept)
  EXPECT_EQ(TileAlignedLeft(0, 2082), 0);
  EXPECT_EQ(TileAlignedLeft(-1, 2082), -1);  // unlimited
  const int64_t heads = 2, dim = 8, row_bytes = 2 * heads * dim * 8;
  for (const auto& [n, capacity, want] : std::vector<std::tuple<int64_t, LayerCapacity, int64_t>>{
           {130, {-1, 1000 * row_bytes}, 894}, {130, {1000, -1}, 1000}, {100, {-1, 1000 * row_bytes}, 1000}}) {
    SCOPED_TRACE("frames of " + std::to_string(n) + ", tokens " + std::to_string(capacity.tokens) + " bytes " + std::to_string(capacity.bytes));
    KvCacheOptions o;
    o.policy = PrunePolicy::kXStream;
    o.cache_tokens = 100000;
    o.format = CacheFormat::kDense;
    auto cache = MakeLayerKvCache(o, c10::kCPU, KvBackendKind::kReference);
    cache->SetCapacity(capacity);
    at::manual_seed(5);
    for (int f = 0; f < 12; ++f) {
      const at::Tensor q = at::randn({heads, n, dim}, at::kDouble), k = at::randn({heads, n, dim}, at::kDouble),
                       v = at::randn({heads, n, dim}, at::kDouble);
      cache->Forward(q, k, v);
      ASSERT_LE(cache->tokens(), 1000) << "frame " << f;
    }
    EXPECT_EQ(cache->tokens(), want);  // the frame just attended included (894 + 130 = 8 x 128)
  }
}

TEST(TokenFloor, CertainRowsKeepTheirCountWhileItHoldsAndLeaveAMarginWhenChosen) {
  // chosen: whole buckets at least the margin below current + floor - 1
  EXPECT_EQ(ChooseCertainRows(1041, 16977, 0, 2048, 256), 16384);
  EXPECT_EQ(ChooseCertainRows(1041, 17600, 0, 2048, 256), 18432 - 2048);  // 18640 - 256 < 18432
  EXPECT_EQ(ChooseCertainRows(1041, 17800, 0, 2048, 256), 18432);
  // kept while it is at most current + floor - 1 and within two buckets of it
  EXPECT_EQ(ChooseCertainRows(1041, 17392, 18432, 2048, 256), 18432);
  EXPECT_EQ(ChooseCertainRows(1041, 17391, 18432, 2048, 256), 16384);  // fell below: chosen again
  EXPECT_EQ(ChooseCertainRows(1041, 19000, 16384, 2048, 256), 16384);
  EXPECT_EQ(ChooseCertainRows(1041, 20500, 16384, 2048, 256), 20480);  // grew past two buckets
  // a slack to keep (a capture anew): chosen again where the count is within it
  EXPECT_EQ(ChooseCertainRows(1041, 17492, 18432, 2048, 256, 64), 18432);   // 18532 - 18432 = 100 >= 64
  EXPECT_EQ(ChooseCertainRows(1041, 17492, 18432, 2048, 256, 128), 16384);  // 100 < 128
  EXPECT_EQ(ChooseCertainRows(1041, 19000, 16384, 2048, 256, 128), 16384);  // far enough above
  // small caches and lagging floors: none
  EXPECT_EQ(ChooseCertainRows(100, 500, 0, 2048, 256), 0);
  EXPECT_EQ(ChooseCertainRows(1041, -3000, 0, 2048, 256), 0);
}

// A token cap below the first and the current frame is refused by the plan, and a cache given such
// a capacity anyway keeps only those two frames instead of growing without bound (it used to read
// the negative room left as "unlimited").
TEST(Budget, TokenCapBelowTwoFramesIsRefusedAndNeverUnbounded) {
  CacheGeometry g{4, 2, 64, 2, 256, 4, 4};
  KvCacheOptions o;
  o.policy = PrunePolicy::kXStream;
  o.cache_tokens = 150;
  try {
    PlanBudget(o, g, 100);
    FAIL() << "a cap of 150 tokens for 100-token frames was accepted";
  } catch (const BudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("cache_tokens 150"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("200 tokens"), std::string::npos) << e.what();
  }
  o.cache_tokens = 200;
  EXPECT_EQ(PlanBudget(o, g, 100).global.tokens, 200);
  for (CacheFormat format : {CacheFormat::kDense, CacheFormat::kKivi4}) {
    KvCacheOptions c;
    c.policy = PrunePolicy::kXStream;
    c.format = format;
    c.cache_tokens = 1 << 20;
    c.special_tokens = 1;
    auto cache = MakeLayerKvCache(c);
    const int64_t n = 32;
    cache->SetCapacity({n, -1});  // below first + current
    at::manual_seed(3);
    for (int f = 0; f < 6; ++f) {
      const at::Tensor q = at::randn({2, n, 64}), k = at::randn({2, n, 64}), v = at::randn({2, n, 64});
      cache->Forward(q, k, v);
      EXPECT_LE(cache->tokens(), 2 * n) << ToString(format) << " frame " << f;
    }
  }
}

// One vocabulary (core/kv/format.h): every name parses back to its entry, printing gives the name,
// and an unknown name's error lists every choice.
TEST(Vocabulary, EveryNameParsesBackAndErrorsListTheChoices) {
  for (const CacheFormatInfo& info : kCacheFormats) {
    EXPECT_EQ(ParseCacheFormat(info.name), info.format) << info.name;
    EXPECT_EQ(ToString(info.format), info.name);
    EXPECT_EQ(FormatInfo(info.format).bits, info.bits);
    if (IsQuantized(info.format)) {
      EXPECT_EQ(FormatBits(info.format), info.bits) << info.name;
    }
  }
  for (const PrunePolicyInfo& info : kPrunePolicies) {
    EXPECT_EQ(ParsePrunePolicy(info.name), info.policy) << info.name;
    EXPECT_EQ(ToString(info.policy), info.name);
  }
  EXPECT_EQ(ParseCacheFormat("dense"), CacheFormat::kDense);
  EXPECT_EQ(CacheFormatNames(), "fp32, bf16, kivi4, kivi2, oscar4, oscar2");
  EXPECT_EQ(PrunePolicyNames("|"), "none|xstream|xstream-page|window|random");
  try {
    ParseCacheFormat("int3");
    FAIL() << "int3 parsed";
  } catch (const OptionError& e) {
    EXPECT_NE(std::string(e.what()).find(CacheFormatNames()), std::string::npos) << e.what();
  }
  EXPECT_THROW(ParsePrunePolicy("lru"), OptionError);
  // The CUDA backend's attention paths (kernels/kv_ops.h) and torch attention backends.
  for (AttentionPath path : {AttentionPath::kAuto, AttentionPath::kFused, AttentionPath::kDequantSdpa,
                             AttentionPath::kDequantSdpaBucketed, AttentionPath::kInt8, AttentionPath::kDequantRagged})
    EXPECT_EQ(ParseAttentionPath(ToString(path)), path) << ToString(path);
  for (SdpaBackend backend : {SdpaBackend::kAuto, SdpaBackend::kFlash, SdpaBackend::kCudnn, SdpaBackend::kEfficient})
    EXPECT_EQ(ParseSdpaBackend(ToString(backend)), backend) << ToString(backend);
  try {
    ParseAttentionPath("fp8");
    FAIL() << "fp8 parsed";
  } catch (const OptionError& e) {
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << e.what();
  }
}

TEST(Options, BadOptionsAreClearErrors) {
  EXPECT_THROW(ParsePrunePolicy("lru"), OptionError);
  EXPECT_THROW(ParseCacheFormat("kivi3"), OptionError);
  KvCacheOptions o;
  o.policy = PrunePolicy::kXStream;
  EXPECT_THROW(o.Check(), OptionError);  // no capacity
  o.cache_tokens = 100;
  o.format = CacheFormat::kKivi4;
  o.v_group = 48;
  EXPECT_THROW(o.Check(64), OptionError);  // 48 does not divide 64
  o.v_group = 64;
  o.format = CacheFormat::kOscar2;
  EXPECT_THROW(o.Check(96), OptionError);  // Hadamard needs a power of two
  EXPECT_NO_THROW(o.Check(64));
}

}  // namespace
}  // namespace streamrecon
