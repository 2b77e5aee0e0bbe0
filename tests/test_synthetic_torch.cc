// The LibTorch renderer of the synthetic scenes against the C++ renderer (on the CPU here; the
// same code runs on the GPU in CUDA builds).
#include <ATen/ATen.h>

#include "datasets/synthetic.h"
#include "datasets/synthetic_torch.h"
#include "tests/test_util.h"

namespace streamrecon::datasets {
namespace {

TEST(SyntheticTorch, MatchesTheCppRenderer) {
  for (const char* variant : {"walk", "orbit", "pan:outdoor"}) {
    SCOPED_TRACE(variant);
    SyntheticOptions o;
    o.width = 140;
    o.height = 112;
    o.frames = 6;
    o.seed = 3;
    ApplySyntheticVariant(variant, o, variant);
    const SyntheticScene scene(o);
    for (int64_t i : {0, 3, 5}) {
      const SyntheticFrame ref = scene.Render(i);
      const TensorFrame got = RenderWithTorch(scene, i, at::kCPU);
      ASSERT_EQ(got.rgb.sizes(), (at::IntArrayRef{112, 140, 3}));
      const at::Tensor depth = at::from_blob(const_cast<float*>(ref.depth.data()), {112, 140}, at::kFloat);
      EXPECT_TRUE(at::equal(got.depth, depth)) << "depth differs, frame " << i;
      const at::Tensor rgb = at::from_blob(const_cast<uint8_t*>(ref.frame.image.data.data()), {112, 140, 3}, at::kByte);
      const at::Tensor diff = (got.rgb.to(at::kInt) - rgb.to(at::kInt)).abs();
      // sin() of LibTorch's vector kernels may differ from libm's in the last bit: a stripe colour
      // can then round to the neighbouring 8-bit value.
      EXPECT_LE(diff.max().item<int>(), 1) << "frame " << i;
      EXPECT_LE(diff.ne(0).sum().item<int64_t>(), diff.numel() / 1000) << "frame " << i;
    }
  }
}

}  // namespace
}  // namespace streamrecon::datasets
