// The backend choice: the one place that knows whether this build has the CUDA kernels.
#include <ATen/Context.h>

#include "core/check.h"
#include "core/kv/backend.h"
#include "core/kv/policy.h"
#ifdef STREAMRECON_HAVE_CUDA_KV
#include "kernels/kv_ops.h"
#endif

namespace streamrecon {

bool CudaKvAvailable() {
#ifdef STREAMRECON_HAVE_CUDA_KV
  return at::hasCUDA();
#else
  return false;
#endif
}

at::Tensor TopOnDevice(const at::Tensor& scores, int64_t k) {
#ifdef STREAMRECON_HAVE_CUDA_KV
  // (bf16 and half scores widen to float exactly, so their order and ties are kept)
  if (scores.is_cuda()) return kernels::TopByScoreCuda(scores.scalar_type() == at::kDouble ? scores : scores.to(at::kFloat), k);
#endif
  return TopByScore(scores, k);
}

std::unique_ptr<LayerKvCache> MakeLayerKvCache(const KvCacheOptions& options, c10::Device device, KvBackendKind kind) {
  options.Check();
  if (kind == KvBackendKind::kAuto)
    kind = device.is_cuda() && options.format != CacheFormat::kDense ? KvBackendKind::kCuda : KvBackendKind::kReference;
  if (kind == KvBackendKind::kReference) return MakeCacheOver(MakeReferenceBackend(options), options);
#ifdef STREAMRECON_HAVE_CUDA_KV
  SR_CHECK(device.is_cuda(), OptionError, "the CUDA KV cache needs a CUDA device, got " << device);
  return MakeCacheOver(MakeCudaBackend(options), options);
#else
  throw OptionError("device " + device.str() +
                    ": this build has no CUDA KV-cache kernels (configure with STREAMRECON_TORCH_CUDA=ON on a CUDA machine)");
#endif
}

}  // namespace streamrecon
