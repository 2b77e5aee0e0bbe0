// The KV cache on the GPU: the same LayerKvCache contract as core's CPU caches, served by the
// CUDA kernels (fused append, attention over pages or dense bf16, device scoring and compaction).
#pragma once

#include <memory>

#include "core/kv_cache.h"

namespace streamrecon::kernels {

// Whether this build has the CUDA kernels and a GPU is visible.
bool CudaKvAvailable();

// A CUDA layer cache: bf16 (fp32 is stored as bf16 on the GPU), kivi4/2 or oscar4/2.
std::unique_ptr<LayerKvCache> MakeCudaLayerKvCache(const KvCacheOptions& options);

}  // namespace streamrecon::kernels
