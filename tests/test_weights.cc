// Weight loading and checking: the 1B key set, .pth variants, and errors naming bad keys.
#include <ATen/ATen.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "models/config.h"
#include "models/weights.h"
#include "tests/test_util.h"

namespace streamrecon::models {
namespace {

using streamrecon::testing::ParityDir;
using streamrecon::testing::ScratchDir;

TEST(Weights, StreamVggt1bKeySetMatchesTheReleasedCheckpoint) {
  const auto path = ParityDir() / "streamvggt_1b_keys.json";
  STREAMRECON_REQUIRE_SHARED(path);
  const auto released = nlohmann::json::parse(std::ifstream(path));
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& [name, shape] : released.items())
    if (!IsIgnoredParameter(name)) expected[name] = shape.get<std::vector<int64_t>>();
  std::map<std::string, std::vector<int64_t>> ours;
  for (const auto& [name, shape] : ExpectedParameters(NamedConfig("streamvggt-1b"))) ours[name] = shape;
  EXPECT_EQ(released.size(), 1797u);
  EXPECT_EQ(ours.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    auto it = ours.find(name);
    ASSERT_NE(it, ours.end()) << "model lacks " << name;
    EXPECT_EQ(it->second, shape) << name;
  }
  for (const auto& [name, shape] : ours) EXPECT_TRUE(expected.count(name)) << "model has extra " << name;
  auto count = [](const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  };
  int64_t ours_params = 0, released_params = 0, ignored_params = 0;
  for (const auto& [name, shape] : ours) ours_params += count(shape);
  for (const auto& [name, shape] : released.items()) {
    released_params += count(shape.get<std::vector<int64_t>>());
    if (IsIgnoredParameter(name)) ignored_params += count(shape.get<std::vector<int64_t>>());
  }
  EXPECT_NEAR(released_params / 1e9, 1.26, 0.01);  // the released checkpoint's size
  EXPECT_EQ(ours_params + ignored_params, released_params);
}

std::filesystem::path PthSeeds() { return streamrecon::testing::SourceDir() / "tests" / "fuzz" / "corpus" / "pth"; }

TEST(Weights, HandWrittenTorchSaveArchivesLoad) {
  // The fuzzers' seeds (tests/fuzz/make_seeds.py writes torch.save's layout without torch).
  std::vector<std::string> notes;
  const StateDict flat = LoadStateDict(PthSeeds() / "flat", &notes);
  ASSERT_EQ(flat.size(), 2u);
  EXPECT_TRUE(at::equal(flat.at("w"), at::tensor({1.0f, -2.0f, 0.5f, 3.25f}).reshape({2, 2})));
  EXPECT_TRUE(at::equal(flat.at("b"), at::tensor({1.0f, -2.0f})));
  const StateDict wrapped = LoadStateDict(PthSeeds() / "wrapped", &notes);
  ASSERT_EQ(wrapped.size(), 1u);
  EXPECT_TRUE(at::equal(wrapped.at("layer.w").to(at::kFloat), at::tensor({1.0f, -2.0f})));
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes.back().find("'model' key"), std::string::npos) << notes.back();
}

// Reads a whole file.
std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(Weights, PthRecordsOutsideTheFileAreRefusedBeforeLibTorchReadsThem) {
  // LibTorch's zip reader trusted these sizes and read past its buffer (fuzz_pth's first finding).
  const auto dir = ScratchDir("pth_zip");
  std::string bytes = Slurp(PthSeeds() / "flat");
  // Grow the stored and announced sizes of archive/data/0 in its central directory entry.
  const std::string name = "archive/data/0";
  const size_t entry = bytes.rfind("PK\x01\x02", bytes.rfind(name));
  ASSERT_NE(entry, std::string::npos);
  for (size_t field : {entry + 20, entry + 24}) bytes[field + 1] = static_cast<char>(0x10);  // +4096 bytes
  std::ofstream(dir / "grown.pth", std::ios::binary) << bytes;
  try {
    LoadStateDict(dir / "grown.pth");
    FAIL() << "a record running past the file was accepted";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("record '" + name + "'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("damaged torch.save archive"), std::string::npos) << e.what();
  }
  // Every input the fuzzer ever crashed on is kept as regression-* in its corpus: each must now be
  // a FileError.
  int regressions = 0;
  for (const auto& entry_path : std::filesystem::directory_iterator(PthSeeds())) {
    if (entry_path.path().filename().string().rfind("regression-", 0) != 0) continue;
    ++regressions;
    EXPECT_THROW(LoadStateDict(entry_path.path()), FileError) << entry_path.path();
  }
  EXPECT_GE(regressions, 1);
}

TEST(Weights, ParityConfigFromHeaderEqualsTheNamedConfig) {
  const auto path = ParityDir() / "weights.safetensors";
  STREAMRECON_REQUIRE_SHARED(path);
  const auto config = ConfigFromWeightsFile(path);
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->ToJson(), NamedConfig("parity-tiny").ToJson());
}

TEST(Weights, PthVariantsEqualSafetensors) {
  STREAMRECON_REQUIRE_SHARED(ParityDir() / "weights.pth");
  std::vector<std::string> notes;
  const StateDict st = LoadStateDict(ParityDir() / "weights.safetensors");
  const StateDict flat = LoadStateDict(ParityDir() / "weights.pth", &notes);
  const StateDict wrapped = LoadStateDict(ParityDir() / "weights_wrapped.pth", &notes);
  ASSERT_EQ(st.size(), 275u);
  for (const StateDict* other : {&flat, &wrapped}) {
    ASSERT_EQ(other->size(), st.size());
    for (const auto& [name, t] : st) EXPECT_TRUE(at::equal(other->at(name), t)) << name;
  }
  EXPECT_FALSE(notes.empty());  // the wrapped file says it unwrapped 'model'
  EXPECT_NO_THROW(CheckStateDict(st, NamedConfig("parity-tiny"), "fixture"));
}

TEST(Weights, CheckNamesMissingUnexpectedAndMisshapedKeys) {
  const ModelConfig config = NamedConfig("parity-tiny");
  StateDict w = RandomWeights(config, 1);
  EXPECT_NO_THROW(CheckStateDict(w, config, "random"));
  w.erase("camera_head.trunk_norm.bias");
  w["aggregator.frame_blocks.0.attn.qkv.weight"] = at::zeros({10, 10});
  w["extra.weight"] = at::zeros({1});
  w["track_head.anything"] = at::zeros({1});  // ignored
  try {
    CheckStateDict(w, config, "file.pth");
    FAIL() << "expected WeightsError";
  } catch (const WeightsError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("file.pth"), std::string::npos) << msg;
    EXPECT_NE(msg.find("missing key 'camera_head.trunk_norm.bias'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'aggregator.frame_blocks.0.attn.qkv.weight' has shape [10, 10], expected [384, 128]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected key 'extra.weight'"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("track_head"), std::string::npos) << msg;
  }
}

TEST(Weights, ConfigMismatchIsAClearError) {
  STREAMRECON_REQUIRE_SHARED(ParityDir() / "weights.safetensors");
  const StateDict st = LoadStateDict(ParityDir() / "weights.safetensors");
  EXPECT_THROW(CheckStateDict(st, NamedConfig("demo-small"), "fixture"), WeightsError);
}

TEST(Weights, CorruptPthIsAFileError) {
  const auto dir = ScratchDir("corrupt_pth");
  std::ofstream(dir / "bad.pth", std::ios::binary) << "PK\x03\x04 this is not a real archive";
  std::ofstream(dir / "legacy.pth", std::ios::binary) << "\x80\x02}q\x00.";
  EXPECT_THROW(LoadStateDict(dir / "bad.pth"), FileError);
  EXPECT_THROW(LoadStateDict(dir / "legacy.pth"), FileError);
  EXPECT_THROW(LoadStateDict(dir / "missing.pth"), FileError);
  EXPECT_THROW(LoadStateDict(dir), FileError);
}

TEST(Weights, TruncatedPthIsAFileError) {
  STREAMRECON_REQUIRE_SHARED(ParityDir() / "weights.pth");
  const auto dir = ScratchDir("truncated_pth");
  std::ifstream in(ParityDir() / "weights.pth", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir / "half.pth", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_THROW(LoadStateDict(dir / "half.pth"), FileError);
}

TEST(Config, RejectsInconsistentConfigs) {
  ModelConfig c = NamedConfig("parity-tiny");
  c.num_heads = 3;
  EXPECT_THROW(c.Check(), OptionError);
  c = NamedConfig("parity-tiny");
  c.dpt.intermediate_layer_idx = {0, 1, 2, 5};
  EXPECT_THROW(c.Check(), OptionError);
  EXPECT_THROW(NamedConfig("nope"), OptionError);
  EXPECT_EQ(ModelConfig::FromJson(NamedConfig("streamvggt-1b").ToJson()).ToJson(), NamedConfig("streamvggt-1b").ToJson());
}

// A config file is read strictly: every named config round-trips, while an empty object, an unknown
// key, a size that would wrap and a wrong type are errors naming the key (they used to become the
// 1B model, be ignored, wrap to 0, or be accepted).
TEST(Config, JsonIsStrictAndNamesTheKey) {
  for (const auto& name : NamedConfigNames()) EXPECT_EQ(ModelConfig::FromJson(NamedConfig(name).ToJson()).ToJson(), NamedConfig(name).ToJson()) << name;
  auto message = [](const nlohmann::json& j) {
    try {
      ModelConfig::FromJson(j);
    } catch (const OptionError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(message(nlohmann::json::object()).find("missing key 'img_size'"), std::string::npos) << message(nlohmann::json::object());
  nlohmann::json j = NamedConfig("parity-tiny").ToJson();
  j["embed_dimm"] = 64;
  EXPECT_NE(message(j).find("unknown key 'embed_dimm'"), std::string::npos) << message(j);
  j = NamedConfig("parity-tiny").ToJson();
  j["dino"]["deepth"] = 3;
  EXPECT_NE(message(j).find("unknown key 'dino.deepth'"), std::string::npos) << message(j);
  j = NamedConfig("parity-tiny").ToJson();
  j["embed_dim"] = uint64_t{1} << 40;
  EXPECT_NE(message(j).find("'embed_dim' is 1099511627776, outside"), std::string::npos) << message(j);
  j = NamedConfig("parity-tiny").ToJson();
  j["depth"] = -2;
  EXPECT_NE(message(j).find("'depth' is -2, outside"), std::string::npos) << message(j);
  j = NamedConfig("parity-tiny").ToJson();
  j["num_heads"] = 2.5;
  EXPECT_NE(message(j).find("'num_heads' must be an integer"), std::string::npos) << message(j);
  j = NamedConfig("parity-tiny").ToJson();
  j["dpt"]["out_channels"] = {16, 32, 64};
  EXPECT_NE(message(j).find("dpt.out_channels"), std::string::npos) << message(j);
  // The reference's dumps carry informational keys; they stay accepted.
  j = NamedConfig("parity-tiny").ToJson();
  j["frames"] = 6;
  j["dino"]["init_values"] = 1.0;
  EXPECT_EQ(message(j), "(accepted)");
}

}  // namespace
}  // namespace streamrecon::models
