// The KV cache's contract, written once and run on every backend present (the reference on the CPU
// always, the CUDA backend where a GPU is visible; otherwise its instances say why they skip):
// capacities are never exceeded, kept tokens read back identically on every later frame, pruning
// keeps what the rule selects (brute force from the spec), and each format stays within its
// error bound.
#include <ATen/ATen.h>

#include <map>
#include <set>

#include "core/kv/budget.h"
#include "core/kv/cache.h"
#include "core/kv/paged_kv.h"
#include "tests/kv_reference.h"
#include "tests/test_util.h"

namespace streamrecon {
namespace {

class KvContract : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    device_ = c10::Device(GetParam());
    if (device_.is_cuda() && !CudaKvAvailable())
      GTEST_SKIP() << "CUDA backend: no CUDA device visible or a CPU-only build (it runs on GPU machines, scripts/gpu_run.sh)";
  }

  // Options every backend serves: pages of 16 tokens, V groups of 32 channels, head dim 64.
  static KvCacheOptions Options(CacheFormat format, PrunePolicy policy) {
    KvCacheOptions o;
    o.format = format;
    o.policy = policy;
    o.k_group = 16;
    o.v_group = 32;
    if (policy != PrunePolicy::kNone) o.cache_tokens = 1 << 20;  // the layer's real capacity comes from SetCapacity
    return o;
  }

  std::unique_ptr<LayerKvCache> Make(const KvCacheOptions& o) const { return MakeLayerKvCache(o, device_); }
  at::Tensor On(const at::Tensor& t) const { return t.to(device_); }

  // A frame whose V carries its identity exactly in every format: channels 0-31 the frame, 32-63
  // the token (constant V groups, small integers: exact in fp16 and bf16).
  static at::Tensor IdValues(int64_t heads, int64_t n, int frame) {
    at::Tensor v = at::empty({heads, n, 64});
    v.narrow(2, 0, 32).fill_(static_cast<float>(frame));
    v.narrow(2, 32, 32).copy_(at::arange(n, at::kFloat).view({1, n, 1}).expand({heads, n, 32}));
    return v;
  }
  static std::pair<int, int> IdOf(const at::Tensor& V, int64_t t) {
    return {static_cast<int>(V[0][t][0].item<float>()), static_cast<int>(V[0][t][32].item<float>())};
  }

  c10::Device device_ = c10::kCPU;
};

const CacheFormat kFormats[] = {CacheFormat::kDense, CacheFormat::kBf16, CacheFormat::kKivi4,
                                CacheFormat::kKivi2, CacheFormat::kOscar4, CacheFormat::kOscar2};
const PrunePolicy kPolicies[] = {PrunePolicy::kXStream, PrunePolicy::kXStreamPage, PrunePolicy::kWindow, PrunePolicy::kRandom};

TEST_P(KvContract, CapacityIsNeverExceeded) {
  const int64_t H = 4, n = 37;  // frames end in partial pages
  for (CacheFormat format : kFormats)
    for (PrunePolicy policy : kPolicies) {
      const KvCacheOptions o = Options(format, policy);
      const int64_t frame_bytes = FrameBytes(o, H, 64, n, 4, false);
      for (const LayerCapacity capacity : {LayerCapacity{5 * n, -1}, LayerCapacity{-1, 5 * frame_bytes}, LayerCapacity{4 * n, 5 * frame_bytes}}) {
        SCOPED_TRACE(ToString(format) + " " + ToString(policy) + " capacity " + std::to_string(capacity.tokens) + " tokens, " +
                     std::to_string(capacity.bytes) + " bytes");
        at::manual_seed(1);
        auto cache = Make(o);
        cache->SetCapacity(capacity);
        for (int frame = 0; frame < 10; ++frame) {
          cache->Forward(On(at::randn({H, n, 64})), On(at::randn({H, n, 64})), On(at::randn({H, n, 64})));
          if (capacity.tokens >= 0) {
            ASSERT_LE(cache->tokens(), capacity.tokens) << "frame " << frame;
          }
          if (capacity.bytes >= 0) {
            ASSERT_LE(cache->bytes(), capacity.bytes) << "frame " << frame;
          }
        }
        // It uses the room it has: more than the two protected frames.
        EXPECT_GT(cache->tokens(), 2 * n);
      }
    }
}

TEST_P(KvContract, KeptTokensReadBackIdenticallyOnEveryLaterFrame) {
  const int64_t H = 2, n = 40;
  for (CacheFormat format : kFormats)
    for (PrunePolicy policy : {PrunePolicy::kXStream, PrunePolicy::kXStreamPage, PrunePolicy::kRandom})
      for (bool by_bytes : {false, true}) {  // a token cap (host selection), a byte cap (device selection)
      SCOPED_TRACE(ToString(format) + " " + ToString(policy) + (by_bytes ? " byte capacity" : " token capacity"));
      at::manual_seed(2);
      const KvCacheOptions o = Options(format, policy);
      auto cache = Make(o);
      cache->SetCapacity(by_bytes ? LayerCapacity{-1, 4 * FrameBytes(o, H, 64, n, 4, false)} : LayerCapacity{4 * n, -1});
      std::map<std::pair<int, int>, std::pair<at::Tensor, at::Tensor>> first_seen;
      for (int frame = 0; frame < 9; ++frame) {
        cache->Forward(On(at::randn({H, n, 64})), On(at::randn({H, n, 64})), On(IdValues(H, n, frame)));
        auto [K, V] = cache->Materialize();
        K = K.to(at::kCPU, at::kFloat), V = V.to(at::kCPU, at::kFloat);
        ASSERT_EQ(V.size(1), cache->tokens());
        std::set<std::pair<int, int>> seen_now;
        for (int64_t t = 0; t < V.size(1); ++t) {
          const auto id = IdOf(V, t);
          ASSERT_TRUE(seen_now.insert(id).second) << "token " << id.first << "/" << id.second << " held twice";
          auto it = first_seen.find(id);
          if (it == first_seen.end()) {
            first_seen.emplace(id, std::make_pair(K.select(1, t).clone(), V.select(1, t).clone()));
          } else {
            ASSERT_TRUE(at::equal(it->second.first, K.select(1, t))) << "K of token " << id.first << "/" << id.second << " at frame " << frame;
            ASSERT_TRUE(at::equal(it->second.second, V.select(1, t))) << "V of token " << id.first << "/" << id.second;
          }
        }
        for (int t = 0; t < n; ++t) EXPECT_TRUE(seen_now.count({0, t})) << "the first frame is protected";
        for (int t = 0; t < n; ++t) EXPECT_TRUE(seen_now.count({frame, t})) << "the current frame is stored";
      }
    }
}


TEST_P(KvContract, PruningKeepsTheTokensTheRuleSelects) {
  const int64_t H = 2, n = 32, cap = 4 * n;  // room for two middle frames; pages of 16 tokens
  for (CacheFormat format : kFormats)
    for (PrunePolicy policy : {PrunePolicy::kXStream, PrunePolicy::kXStreamPage, PrunePolicy::kWindow}) {
      SCOPED_TRACE(ToString(format) + " " + ToString(policy));
      at::manual_seed(3);
      KvCacheOptions o = Options(format, policy);
      auto cache = Make(o);
      cache->SetCapacity({cap, -1});
      const at::Tensor had = HadamardMatrix(64, at::kDouble);
      for (int frame = 0; frame < 7; ++frame) {
        // Keys scaled per token: well-separated scores, so float and double rank them alike.
        const at::Tensor q = at::randn({H, n, 64}) + 0.5;
        const at::Tensor k = at::randn({H, n, 64}) * at::linspace(0.2, 3.0, n).view({1, n, 1}).index_select(1, at::randperm(n));
        auto [K, V] = cache->Materialize();  // as stored (OScaR: rotated, norms applied)
        std::set<std::pair<int, int>> expected;
        if (frame > 0) {
          K = K.to(at::kCPU, at::kDouble), V = V.to(at::kCPU, at::kFloat);
          const std::vector<double> all =
              testing::BruteForceScores(IsOscar(format) ? at::matmul(q.to(at::kDouble), had) : q, K, o.pool_size, o.special_tokens);
          std::vector<std::pair<int, int>> ids;
          std::vector<double> scores;
          for (int64_t t = 0; t < V.size(1); ++t) {
            const auto id = IdOf(V, t);
            if (id.first == 0) continue;  // the first frame is protected
            ids.push_back(id);
            scores.push_back(policy == PrunePolicy::kWindow ? id.first * n + id.second : all[t]);
          }
          const int64_t middle = cap - 2 * n, candidates = static_cast<int64_t>(ids.size());
          if (policy == PrunePolicy::kXStreamPage) {  // pages of 16 consecutive tokens of a frame, by mean score
            std::map<std::pair<int, int>, std::pair<double, int>> pages;
            for (int64_t i = 0; i < candidates; ++i) {
              auto& page = pages[{ids[i].first, ids[i].second / 16}];
              page.first += scores[i], page.second++;
            }
            for (const auto& [page, sum] : pages) {
              int64_t better = 0;
              for (const auto& [other, other_sum] : pages) better += other_sum.first / other_sum.second > sum.first / sum.second;
              if (better < middle / 16 || candidates <= middle)
                for (int64_t i = 0; i < candidates; ++i)
                  if (std::make_pair(ids[i].first, ids[i].second / 16) == page) expected.insert(ids[i]);
            }
          } else {
            for (int64_t i = 0; i < candidates; ++i) {
              int64_t better = 0;
              for (int64_t j = 0; j < candidates; ++j) better += scores[j] > scores[i];
              if (better < middle) expected.insert(ids[i]);
            }
          }
        }
        cache->Forward(On(q), On(k), On(IdValues(H, n, frame)));
        const at::Tensor V2 = cache->Materialize().second.to(at::kCPU, at::kFloat);
        std::set<std::pair<int, int>> kept;
        for (int64_t t = 0; t < V2.size(1); ++t) {
          const auto id = IdOf(V2, t);
          if (id.first > 0 && id.first < frame) kept.insert(id);
        }
        if (frame > 0) {
          EXPECT_EQ(kept, expected) << "frame " << frame;
        }
      }
    }
}

// Attention over the cache against exact attention over everything the stream stored (random
// Gaussian K/V, the hard case: no structure to exploit). Each format's own error, measured on the
// CPU reference, stays within its bound; a backend stays within 1.1x the reference's error plus
// bf16's share (the CUDA backend attends in bf16).
TEST_P(KvContract, EachFormatStaysWithinItsErrorBound) {
  const int64_t H = 2, n = 40;
  for (CacheFormat format : kFormats) {
    at::manual_seed(4);
    auto cache = Make(Options(format, PrunePolicy::kNone));
    auto reference = MakeLayerKvCache(Options(format, PrunePolicy::kNone), c10::kCPU, KvBackendKind::kReference);
    std::vector<at::Tensor> ks, vs;
    double worst = 0, worst_reference = 0;
    for (int frame = 0; frame < 4; ++frame) {
      const at::Tensor q = at::randn({H, n, 64}), k = at::randn({H, n, 64}), v = at::randn({H, n, 64});
      ks.push_back(k);
      vs.push_back(v);
      const at::Tensor got = cache->Forward(On(q), On(k), On(v)).to(at::kCPU, at::kDouble);
      const at::Tensor ref_got = reference->Forward(q, k, v).to(at::kDouble);
      const at::Tensor K = at::cat(ks, 1).to(at::kDouble), V = at::cat(vs, 1).to(at::kDouble);
      const at::Tensor exact = at::matmul(at::softmax(at::matmul(q.to(at::kDouble), K.transpose(1, 2)) / 8.0, -1), V);
      worst = std::max(worst, ((got - exact).norm() / exact.norm()).item<double>());
      worst_reference = std::max(worst_reference, ((ref_got - exact).norm() / exact.norm()).item<double>());
    }
    EXPECT_EQ(cache->tokens(), 4 * n);
    // The format's own error (fp32: float rounding; bf16: 8-bit mantissas; 4-bit codes within 10%,
    // 2-bit within 55% on this hard case), then the backend against it.
    const double format_bound =
        format == CacheFormat::kDense ? 1e-5 : format == CacheFormat::kBf16 ? 1e-2 : FormatBits(format) == 4 ? 0.10 : 0.55;
    const double bound = 1.1 * worst_reference + (device_.is_cuda() ? 1e-2 : 0.0);
    std::printf("[ info ] %s %s: attention rel err %.2e, CPU reference %.2e (format bound %.0e)\n", device_.str().c_str(),
                ToString(format).c_str(), worst, worst_reference, format_bound);
    EXPECT_LE(worst_reference, format_bound) << ToString(format);
    EXPECT_LE(worst, bound) << ToString(format);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, KvContract, ::testing::Values("cpu", "cuda"),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

}  // namespace
}  // namespace streamrecon
