// Model configuration: JSON I/O, built-in names and the expected parameter list.
#include "models/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace streamrecon::models {
namespace {

void Require(bool ok, const std::string& what) {
  if (!ok) throw OptionError("invalid model config: " + what);
}

template <typename T>
void Get(const nlohmann::json& j, const std::string& where, const char* key, T& value) {
  if (!j.contains(key)) return;
  try {
    value = j.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw OptionError("invalid model config: key '" + where + key + "' has the wrong type (" + e.what() + ")");
  }
}

// An integer within [lo, hi] (a value that would wrap or overflow is an error, not a size).
int CheckedInt(const nlohmann::json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) throw OptionError("invalid model config: key '" + name + "' must be an integer, found " + v.dump());
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v.get<uint64_t>()) >= lo
                                               : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!in_range)
    throw OptionError("invalid model config: key '" + name + "' is " + v.dump() + ", outside [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
  return static_cast<int>(v.get<int64_t>());
}

void GetInt(const nlohmann::json& j, const std::string& where, const char* key, int& value, int64_t lo, int64_t hi) {
  if (j.contains(key)) value = CheckedInt(j.at(key), where + key, lo, hi);
}

void GetPositive(const nlohmann::json& j, const std::string& where, const char* key, double& value, double hi) {
  Get(j, where, key, value);
  if (j.contains(key) && !(value > 0 && value <= hi))
    throw OptionError("invalid model config: key '" + where + key + "' is " + j.at(key).dump() + ", outside (0, " + std::to_string(hi) + "]");
}

// Every key of an object must be one we read (or one the reference's dumps carry for information).
void RejectUnknownKeys(const nlohmann::json& j, const std::string& where, const std::vector<std::string>& known) {
  for (const auto& [key, value] : j.items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    throw OptionError("invalid model config: unknown key '" + where + key + "' (expected one of: " + list + ")");
  }
}

}  // namespace

void ModelConfig::Check() const {
  Require(patch_size > 0, "patch_size must be positive");
  Require(img_size >= patch_size && img_size % patch_size == 0, "img_size must be a positive multiple of patch_size");
  Require(embed_dim > 0 && num_heads > 0 && embed_dim % num_heads == 0,
          "embed_dim (" + std::to_string(embed_dim) + ") must be divisible by num_heads (" + std::to_string(num_heads) + ")");
  Require(head_dim() % 4 == 0, "head dim " + std::to_string(head_dim()) + " must be a multiple of 4 for 2D RoPE");
  Require(depth > 0, "depth must be positive");
  Require(num_register_tokens >= 0, "num_register_tokens must be >= 0");
  Require(dino.embed_dim > 0 && dino.num_heads > 0 && dino.embed_dim % dino.num_heads == 0,
          "dino.embed_dim must be divisible by dino.num_heads");
  Require(dino.embed_dim == embed_dim, "dino.embed_dim must equal embed_dim (patch tokens feed the aggregator)");
  Require(dino.depth > 0, "dino.depth must be positive");
  Require(camera_head.dim_in == 2 * embed_dim, "camera_head.dim_in must be 2 x embed_dim");
  Require(camera_head.num_heads > 0 && camera_head.dim_in % camera_head.num_heads == 0,
          "camera_head.dim_in must be divisible by camera_head.num_heads");
  Require(camera_head.trunk_depth > 0 && camera_head.iterations > 0, "camera head trunk_depth and iterations must be positive");
  Require(dpt.dim_in == 2 * embed_dim, "dpt.dim_in must be 2 x embed_dim");
  Require(dpt.features > 0 && dpt.features % 4 == 0, "dpt.features must be a positive multiple of 4");
  for (int c : dpt.out_channels) Require(c > 0 && c % 4 == 0, "dpt.out_channels must be positive multiples of 4");
  for (int idx : dpt.intermediate_layer_idx)
    Require(idx >= 0 && idx < depth, "dpt.intermediate_layer_idx " + std::to_string(idx) + " is outside [0, depth)");
}

ModelConfig ModelConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) throw OptionError("invalid model config: expected a JSON object, found " + std::string(j.type_name()));
  // The sizes that define a model must be given; the rest has documented defaults (README).
  for (const char* key : {"img_size", "patch_size", "embed_dim", "depth", "num_heads"})
    if (!j.contains(key)) throw OptionError(std::string("invalid model config: missing key '") + key + "' (every config names img_size, patch_size, embed_dim, depth and num_heads)");
  // "frames", "height" and "width" are informational keys of the reference's dumps.
  RejectUnknownKeys(j, "", {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_register_tokens",
                            "rope_frequency", "dino", "camera_head", "dpt", "frames", "height", "width"});
  constexpr int64_t kBig = 1 << 16;
  ModelConfig c;
  GetInt(j, "", "img_size", c.img_size, 1, kBig);
  GetInt(j, "", "patch_size", c.patch_size, 1, 1024);
  GetInt(j, "", "embed_dim", c.embed_dim, 1, kBig);
  GetInt(j, "", "depth", c.depth, 1, 1024);
  GetInt(j, "", "num_heads", c.num_heads, 1, 1024);
  GetPositive(j, "", "mlp_ratio", c.mlp_ratio, 64);
  GetInt(j, "", "num_register_tokens", c.num_register_tokens, 0, 1024);
  GetPositive(j, "", "rope_frequency", c.rope_frequency, 1e9);
  c.dino.embed_dim = c.embed_dim;
  c.dino.num_register_tokens = c.num_register_tokens;
  if (j.contains("dino")) {
    const auto& d = j.at("dino");
    if (!d.is_object()) throw OptionError("invalid model config: key 'dino' must be an object");
    RejectUnknownKeys(d, "dino.", {"embed_dim", "depth", "num_heads", "mlp_ratio", "num_register_tokens", "interpolate_antialias",
                                   "interpolate_offset", "init_values"});
    GetInt(d, "dino.", "embed_dim", c.dino.embed_dim, 1, kBig);
    GetInt(d, "dino.", "depth", c.dino.depth, 1, 1024);
    GetInt(d, "dino.", "num_heads", c.dino.num_heads, 1, 1024);
    GetPositive(d, "dino.", "mlp_ratio", c.dino.mlp_ratio, 64);
    GetInt(d, "dino.", "num_register_tokens", c.dino.num_register_tokens, 0, 1024);
    Get(d, "dino.", "interpolate_antialias", c.dino.interpolate_antialias);
    Get(d, "dino.", "interpolate_offset", c.dino.interpolate_offset);
    if (!(c.dino.interpolate_offset >= 0 && c.dino.interpolate_offset < 1))
      throw OptionError("invalid model config: key 'dino.interpolate_offset' must be in [0, 1)");
  }
  c.camera_head.dim_in = 2 * c.embed_dim;
  c.dpt.dim_in = 2 * c.embed_dim;
  if (j.contains("camera_head")) {
    const auto& h = j.at("camera_head");
    if (!h.is_object()) throw OptionError("invalid model config: key 'camera_head' must be an object");
    RejectUnknownKeys(h, "camera_head.", {"dim_in", "trunk_depth", "num_heads", "mlp_ratio", "iterations"});
    GetInt(h, "camera_head.", "dim_in", c.camera_head.dim_in, 1, 2 * kBig);
    GetInt(h, "camera_head.", "trunk_depth", c.camera_head.trunk_depth, 1, 1024);
    GetInt(h, "camera_head.", "num_heads", c.camera_head.num_heads, 1, 1024);
    GetPositive(h, "camera_head.", "mlp_ratio", c.camera_head.mlp_ratio, 64);
    GetInt(h, "camera_head.", "iterations", c.camera_head.iterations, 1, 64);
  }
  if (j.contains("dpt")) {
    const auto& h = j.at("dpt");
    if (!h.is_object()) throw OptionError("invalid model config: key 'dpt' must be an object");
    RejectUnknownKeys(h, "dpt.", {"dim_in", "features", "out_channels", "intermediate_layer_idx"});
    GetInt(h, "dpt.", "dim_in", c.dpt.dim_in, 1, 2 * kBig);
    GetInt(h, "dpt.", "features", c.dpt.features, 1, kBig);
    for (const char* key : {"out_channels", "intermediate_layer_idx"}) {
      if (!h.contains(key)) continue;
      const auto& a = h.at(key);
      if (!a.is_array() || a.size() != 4) throw OptionError(std::string("invalid model config: key 'dpt.") + key + "' must be an array of 4 integers");
      auto& target = std::string(key) == "out_channels" ? c.dpt.out_channels : c.dpt.intermediate_layer_idx;
      for (int i = 0; i < 4; ++i) target[i] = CheckedInt(a[i], std::string("dpt.") + key + "[" + std::to_string(i) + "]", 0, kBig);
    }
  }
  c.Check();
  return c;
}

nlohmann::json ModelConfig::ToJson() const {
  return {
      {"img_size", img_size},
      {"patch_size", patch_size},
      {"embed_dim", embed_dim},
      {"depth", depth},
      {"num_heads", num_heads},
      {"mlp_ratio", mlp_ratio},
      {"num_register_tokens", num_register_tokens},
      {"rope_frequency", rope_frequency},
      {"dino",
       {{"embed_dim", dino.embed_dim},
        {"depth", dino.depth},
        {"num_heads", dino.num_heads},
        {"mlp_ratio", dino.mlp_ratio},
        {"num_register_tokens", dino.num_register_tokens},
        {"interpolate_antialias", dino.interpolate_antialias},
        {"interpolate_offset", dino.interpolate_offset}}},
      {"camera_head",
       {{"dim_in", camera_head.dim_in},
        {"trunk_depth", camera_head.trunk_depth},
        {"num_heads", camera_head.num_heads},
        {"mlp_ratio", camera_head.mlp_ratio},
        {"iterations", camera_head.iterations}}},
      {"dpt",
       {{"dim_in", dpt.dim_in},
        {"features", dpt.features},
        {"out_channels", dpt.out_channels},
        {"intermediate_layer_idx", dpt.intermediate_layer_idx}}},
  };
}

ModelConfig NamedConfig(const std::string& name) {
  ModelConfig c;  // defaults are the released 1B model
  if (name == "streamvggt-1b") return c;
  auto small = [](int depth, std::array<int, 4> taps) {
    ModelConfig s;
    s.embed_dim = 128;
    s.depth = depth;
    s.num_heads = 2;
    s.dino = DinoConfig{128, 2, 2, 4.0, 4, true, 0.0};
    s.camera_head = CameraHeadConfig{256, 2, 2, 4.0, 4};
    s.dpt = DptConfig{256, 32, {16, 32, 64, 64}, taps};
    return s;
  };
  if (name == "parity-tiny") return small(2, {0, 0, 1, 1});
  if (name == "demo-small") return small(4, {0, 1, 2, 3});
  if (name == "recon-small") {  // the shipped, trained default model (models/recon_small.safetensors)
    ModelConfig s;
    s.img_size = 224;
    s.embed_dim = 128;
    s.depth = 6;
    s.num_heads = 2;  // head dim 64, as the CUDA kernels serve
    s.dino = DinoConfig{128, 3, 2, 4.0, 4, true, 0.0};
    s.camera_head = CameraHeadConfig{256, 1, 4, 2.0, 4};
    s.dpt = DptConfig{256, 48, {32, 48, 96, 96}, {1, 2, 4, 5}};
    return s;
  }
  std::string names;
  for (const auto& n : NamedConfigNames()) names += (names.empty() ? "" : ", ") + n;
  throw OptionError("unknown model config '" + name + "': expected one of " + names + " or a path to a JSON file");
}

std::vector<std::string> NamedConfigNames() { return {"streamvggt-1b", "parity-tiny", "demo-small", "recon-small"}; }

ModelConfig LoadConfig(const std::string& name_or_path) {
  for (const auto& n : NamedConfigNames())
    if (n == name_or_path) return NamedConfig(n);
  std::ifstream in(name_or_path);
  if (!in) return NamedConfig(name_or_path);  // reports the unknown name and the choices
  try {
    return ModelConfig::FromJson(nlohmann::json::parse(in));
  } catch (const nlohmann::json::parse_error& e) {
    throw FileError("cannot parse model config " + name_or_path + ": " + e.what());
  }
}

bool IsIgnoredParameter(const std::string& key) {
  return key.rfind("track_head.", 0) == 0 || key == "aggregator.patch_embed.mask_token";
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedParameters(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> p;
  auto add = [&p](std::string name, std::vector<int64_t> shape) { p.emplace_back(std::move(name), std::move(shape)); };
  auto block = [&](const std::string& prefix, int64_t dim, double mlp_ratio, bool qk_norm, int64_t head_dim) {
    const int64_t hidden = static_cast<int64_t>(dim * mlp_ratio);
    add(prefix + "norm1.weight", {dim});
    add(prefix + "norm1.bias", {dim});
    add(prefix + "attn.qkv.weight", {3 * dim, dim});
    add(prefix + "attn.qkv.bias", {3 * dim});
    if (qk_norm) {
      add(prefix + "attn.q_norm.weight", {head_dim});
      add(prefix + "attn.q_norm.bias", {head_dim});
      add(prefix + "attn.k_norm.weight", {head_dim});
      add(prefix + "attn.k_norm.bias", {head_dim});
    }
    add(prefix + "attn.proj.weight", {dim, dim});
    add(prefix + "attn.proj.bias", {dim});
    add(prefix + "ls1.gamma", {dim});
    add(prefix + "norm2.weight", {dim});
    add(prefix + "norm2.bias", {dim});
    add(prefix + "mlp.fc1.weight", {hidden, dim});
    add(prefix + "mlp.fc1.bias", {hidden});
    add(prefix + "mlp.fc2.weight", {dim, hidden});
    add(prefix + "mlp.fc2.bias", {dim});
    add(prefix + "ls2.gamma", {dim});
  };

  const int64_t C = c.embed_dim;
  const int64_t grid = c.pos_grid();
  add("aggregator.camera_token", {1, 2, 1, C});
  add("aggregator.register_token", {1, 2, c.num_register_tokens, C});
  const std::string pe = "aggregator.patch_embed.";
  add(pe + "cls_token", {1, 1, C});
  add(pe + "pos_embed", {1, 1 + grid * grid, C});
  add(pe + "register_tokens", {1, c.dino.num_register_tokens, C});
  add(pe + "patch_embed.proj.weight", {C, 3, c.patch_size, c.patch_size});
  add(pe + "patch_embed.proj.bias", {C});
  for (int i = 0; i < c.dino.depth; ++i)
    block(pe + "blocks." + std::to_string(i) + ".", C, c.dino.mlp_ratio, false, C / c.dino.num_heads);
  add(pe + "norm.weight", {C});
  add(pe + "norm.bias", {C});
  for (const char* kind : {"frame_blocks.", "global_blocks."})
    for (int i = 0; i < c.depth; ++i)
      block(std::string("aggregator.") + kind + std::to_string(i) + ".", C, c.mlp_ratio, true, c.head_dim());

  const int64_t D = c.camera_head.dim_in;
  add("camera_head.empty_pose_tokens", {1, 1, 9});
  for (int i = 0; i < c.camera_head.trunk_depth; ++i)
    block("camera_head.trunk." + std::to_string(i) + ".", D, c.camera_head.mlp_ratio, false, D / c.camera_head.num_heads);
  add("camera_head.token_norm.weight", {D});
  add("camera_head.token_norm.bias", {D});
  add("camera_head.trunk_norm.weight", {D});
  add("camera_head.trunk_norm.bias", {D});
  add("camera_head.embed_pose.weight", {D, 9});
  add("camera_head.embed_pose.bias", {D});
  add("camera_head.poseLN_modulation.1.weight", {3 * D, D});
  add("camera_head.poseLN_modulation.1.bias", {3 * D});
  add("camera_head.pose_branch.fc1.weight", {D / 2, D});
  add("camera_head.pose_branch.fc1.bias", {D / 2});
  add("camera_head.pose_branch.fc2.weight", {9, D / 2});
  add("camera_head.pose_branch.fc2.bias", {9});

  for (auto [head, out_dim] : {std::pair<const char*, int64_t>{"point_head.", 4}, {"depth_head.", 2}}) {
    const std::string h = head;
    const auto& oc = c.dpt.out_channels;
    const int64_t F = c.dpt.features;
    add(h + "norm.weight", {c.dpt.dim_in});
    add(h + "norm.bias", {c.dpt.dim_in});
    for (int i = 0; i < 4; ++i) {
      add(h + "projects." + std::to_string(i) + ".weight", {oc[i], c.dpt.dim_in, 1, 1});
      add(h + "projects." + std::to_string(i) + ".bias", {oc[i]});
    }
    add(h + "resize_layers.0.weight", {oc[0], oc[0], 4, 4});
    add(h + "resize_layers.0.bias", {oc[0]});
    add(h + "resize_layers.1.weight", {oc[1], oc[1], 2, 2});
    add(h + "resize_layers.1.bias", {oc[1]});
    add(h + "resize_layers.3.weight", {oc[3], oc[3], 3, 3});
    add(h + "resize_layers.3.bias", {oc[3]});
    for (int i = 0; i < 4; ++i) add(h + "scratch.layer" + std::to_string(i + 1) + "_rn.weight", {F, oc[i], 3, 3});
    for (int r = 1; r <= 4; ++r) {
      const std::string rn = h + "scratch.refinenet" + std::to_string(r) + ".";
      add(rn + "out_conv.weight", {F, F, 1, 1});
      add(rn + "out_conv.bias", {F});
      for (int u = (r == 4 ? 2 : 1); u <= 2; ++u)
        for (const char* conv : {"conv1", "conv2"}) {
          const std::string pre = rn + "resConfUnit" + std::to_string(u) + "." + conv;
          add(pre + ".weight", {F, F, 3, 3});
          add(pre + ".bias", {F});
        }
    }
    add(h + "scratch.output_conv1.weight", {F / 2, F, 3, 3});
    add(h + "scratch.output_conv1.bias", {F / 2});
    add(h + "scratch.output_conv2.0.weight", {32, F / 2, 3, 3});
    add(h + "scratch.output_conv2.0.bias", {32});
    add(h + "scratch.output_conv2.2.weight", {out_dim, 32, 1, 1});
    add(h + "scratch.output_conv2.2.bias", {out_dim});
  }
  return p;
}

}  // namespace streamrecon::models
