// A CUDA launch's error as this project's Error (shared by the LibTorch-facing kernel entries).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "core/errors.h"

namespace streamrecon::kernels {

inline void CheckCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // do not leave the error for the next CUDA call to report
  throw Error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

}  // namespace streamrecon::kernels
