// Builds without the CUDA kernels have no CUDA graphs: the step always runs eagerly
// (ModelOptions::Check refuses --cuda-graphs without a CUDA device).
#include "models/model_impl.h"

namespace streamrecon::models {

struct StreamingModel::Impl::Graphs {};

void StreamingModel::Impl::DropGraphsUnlessSize(int64_t, int64_t) { graphs.reset(); }

bool StreamingModel::Impl::GraphStep(const Tensor&, int64_t, int64_t, int64_t, int64_t, bool, StepOutput&) { return false; }

Tensor StreamingModel::Impl::GraphCamera(const Tensor& camera_token) { return CameraHead(camera_token); }

StreamingModel::Impl::HeadsOut StreamingModel::Impl::ParallelDptHeads(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H,
                                                                      int64_t W) {
  return DptHeads(taps, h, wd, H, W);
}

}  // namespace streamrecon::models
