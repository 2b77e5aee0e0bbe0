// The synthetic scenes rendered with LibTorch tensor operations on any device (the GPU when built
// with CUDA): the same rays, surfaces, solid textures and shading as SyntheticScene::Render, in
// float64, one pass over all pixels.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "datasets/synthetic.h"

namespace streamrecon::datasets {

struct TensorFrame {
  at::Tensor rgb;    // [H, W, 3] uint8
  at::Tensor depth;  // [H, W] float32 metres (z along the optical axis)
};

// Frame `index` of `scene` on `device` (e.g. at::kCPU, at::kCUDA). Throws Error for a bad index.
TensorFrame RenderWithTorch(const SyntheticScene& scene, int64_t index, at::Device device);

}  // namespace streamrecon::datasets
