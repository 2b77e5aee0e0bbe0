// Long streams under a byte budget: the caches never exceed it, on any frame, and stop growing.
#include <ATen/ATen.h>

#include "core/errors.h"
#include "core/kv/budget.h"
#include "core/kv/paged_kv.h"
#include "datasets/synthetic.h"
#include "models/streaming_model.h"
#include "tests/test_util.h"

namespace streamrecon::models {
namespace {

struct BudgetCase {
  CacheFormat format;
  PrunePolicy policy;
};

void PrintTo(const BudgetCase& c, std::ostream* os) { *os << ToString(c.format) << " + " << ToString(c.policy); }

class StreamBudget : public ::testing::TestWithParam<BudgetCase> {};

TEST_P(StreamBudget, ThreeHundredFramesStayWithinAQuarterOfTheFullCache) {
  const ModelConfig config = NamedConfig("parity-tiny");
  const StateDict weights = RandomWeights(config, 11);
  datasets::SyntheticOptions so;
  so.width = 70;
  so.height = 56;
  so.frames = 300;
  const datasets::SyntheticScene scene(so);

  ModelOptions options;
  options.cache.format = GetParam().format;
  options.cache.policy = GetParam().policy;
  options.cache.k_group = 8;
  // What this format's unbounded cache would hold after 300 frames (global layers + camera trunk).
  const int64_t n = 5 + 4 * 5;
  const int trunk_elem = TrunkFormat(options.cache.format) == CacheFormat::kDense ? 4 : 2;
  const int64_t full_bytes =
      300 * (config.depth * FrameBytes(options.cache, config.num_heads, config.head_dim(), n, 4, false) +
             config.camera_head.trunk_depth * config.camera_head.iterations * 2 * config.camera_head.dim_in * trunk_elem);
  options.cache.budget_bytes = static_cast<uint64_t>(full_bytes / 4);
  StreamingModel model(config, weights, options);
  std::vector<int64_t> bytes;
  for (int64_t i = 0; i < 300; ++i) {
    model.Step(ImageToTensor(scene.Render(i).frame.image));
    bytes.push_back(model.CacheBytes());
    ASSERT_LE(bytes.back(), static_cast<int64_t>(options.cache.budget_bytes)) << "frame " << i;
    ASSERT_LE(model.Cache().max_bytes, static_cast<int64_t>(options.cache.budget_bytes)) << "frame " << i;
  }
  const int64_t early = *std::max_element(bytes.begin(), bytes.begin() + 200);
  const int64_t late = *std::max_element(bytes.begin() + 200, bytes.end());
  EXPECT_LE(late, early) << "memory still grows after frame 200";
  EXPECT_GT(late, static_cast<int64_t>(options.cache.budget_bytes) / 2) << "the budget is used";
  const CacheReport report = model.Cache();
  EXPECT_GT(report.plan.frames, 2);
  // Tiny pages (8 slots, 25-token frames) carry a lot of scale/zero overhead, yet stay below bf16.
  if (IsQuantized(GetParam().format)) {
    EXPECT_LT(report.effective_bits, 8.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, StreamBudget,
                         ::testing::Values(BudgetCase{CacheFormat::kBf16, PrunePolicy::kXStream},
                                           BudgetCase{CacheFormat::kKivi2, PrunePolicy::kXStreamPage},
                                           BudgetCase{CacheFormat::kOscar2, PrunePolicy::kXStream}),
                         [](const auto& info) { return ToString(info.param.format) + "_" + std::to_string(static_cast<int>(info.param.policy)); });

TEST(StreamBudget, TooSmallABudgetNamesTheMinimum) {
  const ModelConfig config = NamedConfig("parity-tiny");
  ModelOptions options;
  options.cache.policy = PrunePolicy::kXStream;
  options.cache.budget_bytes = 1024;
  StreamingModel model(config, RandomWeights(config, 1), options);
  try {
    model.Step(at::rand({3, 56, 70}));
    FAIL() << "expected BudgetError";
  } catch (const BudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("the minimum"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace streamrecon::models
