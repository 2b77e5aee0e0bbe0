// Weight files: safetensors (read through a memory map, written atomically) and PyTorch .pth
// (flat state dict or {"model": ...}), checked against a ModelConfig key by key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "models/config.h"

namespace streamrecon::models {

using StateDict = std::map<std::string, at::Tensor>;

struct SafetensorsFile {
  StateDict tensors;                            // CPU tensors in the file's dtypes
  std::map<std::string, std::string> metadata;  // the "__metadata__" entries
};

// Throws FileError naming the file (and key) for anything malformed or truncated.
SafetensorsFile ReadSafetensors(const std::filesystem::path& path);

// Writes contiguous CPU tensors (any dtype above) atomically.
void WriteSafetensors(const std::filesystem::path& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Loads a state dict from .safetensors or .pth (zip format from torch.save; flat or wrapped in
// {"model": ...} / {"state_dict": ...}; a "module." prefix is stripped). notes receives what was done.
StateDict LoadStateDict(const std::filesystem::path& path, std::vector<std::string>* notes = nullptr);

// The config stored in a safetensors header ("config" metadata), if any.
std::optional<ModelConfig> ConfigFromWeightsFile(const std::filesystem::path& path);

// Throws WeightsError listing every missing, unexpected or mis-shaped key (ignored keys excepted).
void CheckStateDict(const StateDict& weights, const ModelConfig& config, const std::string& source);

// Seeded random weights of the right shapes (for demos and benchmarks without a checkpoint).
StateDict RandomWeights(const ModelConfig& config, uint64_t seed);

}  // namespace streamrecon::models
