// Model configuration of the StreamVGGT family: every size is a field, nothing is hard-coded.
// A config comes from a safetensors header, a JSON file, or a built-in name (streamvggt-1b, ...).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace streamrecon::models {

// The DINOv2-style patch embedder (pre-norm ViT with LayerScale and register tokens).
struct DinoConfig {
  int embed_dim = 1024;              // token width
  int depth = 24;                    // number of blocks
  int num_heads = 16;                // attention heads
  double mlp_ratio = 4.0;            // MLP hidden width / embed_dim
  int num_register_tokens = 4;       // register tokens inserted after cls
  bool interpolate_antialias = true; // antialiased bicubic resize of the positional table
  double interpolate_offset = 0.0;   // DINOv2's offset trick (0 = resize to the exact grid)
};

// The camera head: an iterative refiner with a trunk of transformer blocks.
struct CameraHeadConfig {
  int dim_in = 2048;        // token width (2 x aggregator width)
  int trunk_depth = 4;      // trunk blocks
  int num_heads = 16;       // trunk attention heads
  double mlp_ratio = 4.0;   // trunk MLP ratio
  int iterations = 4;       // refinement iterations per frame
};

// The DPT heads (depth and world points share this shape).
struct DptConfig {
  int dim_in = 2048;                                     // token width (2 x aggregator width)
  int features = 256;                                    // fusion width
  std::array<int, 4> out_channels{256, 512, 1024, 1024}; // per-tap projection widths
  std::array<int, 4> intermediate_layer_idx{4, 11, 17, 23};  // aggregator outputs tapped
};

struct ModelConfig {
  int img_size = 518;             // training resolution of the positional table (grid = img_size / patch)
  int patch_size = 14;            // patch size in pixels
  int embed_dim = 1024;           // aggregator width
  int depth = 24;                 // aggregator depth (frame + global block pairs)
  int num_heads = 16;             // aggregator heads
  double mlp_ratio = 4.0;         // aggregator MLP ratio
  int num_register_tokens = 4;    // aggregator register tokens (per slot)
  double rope_frequency = 100.0;  // 2D RoPE base
  DinoConfig dino;
  CameraHeadConfig camera_head;
  DptConfig dpt;

  int head_dim() const { return embed_dim / num_heads; }
  int pos_grid() const { return img_size / patch_size; }
  int special_tokens() const { return 1 + num_register_tokens; }
  // Throws OptionError describing the first inconsistency.
  void Check() const;

  // Reads the StreamVGGT-style JSON (keys as in the fixture header); missing keys keep defaults.
  static ModelConfig FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;
};

// Built-in configurations: "streamvggt-1b" (the released model), "parity-tiny" (the fixture's
// shapes), "demo-small" (the bundled demo). Throws OptionError for an unknown name.
ModelConfig NamedConfig(const std::string& name);
std::vector<std::string> NamedConfigNames();

// A built-in name or a path to a JSON file.
ModelConfig LoadConfig(const std::string& name_or_path);

// Every parameter the model expects, with its shape, in a stable order.
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedParameters(const ModelConfig& config);

// Keys present in released checkpoints that streaming does not use (accepted, ignored).
bool IsIgnoredParameter(const std::string& key);

}  // namespace streamrecon::models
