// Safetensors reading/writing: round trips of every dtype, and clear errors for broken files.
#include <ATen/ATen.h>

#include <cstring>
#include <fstream>

#include "core/errors.h"
#include "models/weights.h"
#include "tests/test_util.h"

namespace streamrecon::models {
namespace {

using streamrecon::testing::ScratchDir;

TEST(Safetensors, RoundTripsEveryDtypeBitExactly) {
  const auto dir = ScratchDir("safetensors_roundtrip");
  StateDict in;
  in["f64"] = at::randn({3, 5}, at::kDouble);
  in["f32"] = at::randn({2, 3, 4});
  in["f16"] = at::randn({7}).to(at::kHalf);
  in["bf16"] = at::randn({4, 4}).to(at::kBFloat16);
  in["i64"] = at::arange(10, at::kLong);
  in["u8"] = at::arange(7, at::kByte);
  in["empty"] = at::zeros({0, 3});
  in["scalar"] = at::tensor(3.5);
  WriteSafetensors(dir / "t.safetensors", in, {{"config", "{\"a\": 1}"}});
  const SafetensorsFile out = ReadSafetensors(dir / "t.safetensors");
  ASSERT_EQ(out.tensors.size(), in.size());
  EXPECT_EQ(out.metadata.at("config"), "{\"a\": 1}");
  for (const auto& [name, t] : in) {
    const at::Tensor& r = out.tensors.at(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(r, t)) << name;
  }
}

class BrokenSafetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchDir("safetensors_broken");
    WriteSafetensors(dir_ / "good.safetensors", {{"w", at::randn({16, 16})}});
    std::ifstream in(dir_ / "good.safetensors", std::ios::binary);
    bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::filesystem::path Write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
    return dir_ / name;
  }
  std::string ErrorOf(const std::filesystem::path& path) {
    try {
      ReadSafetensors(path);
    } catch (const FileError& e) {
      return e.what();
    }
    return "";
  }
  std::filesystem::path dir_;
  std::string bytes_;
};

TEST_F(BrokenSafetensors, TruncatedDataNamesTheTensor) {
  const auto msg = ErrorOf(Write("trunc.safetensors", bytes_.substr(0, bytes_.size() - 100)));
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(BrokenSafetensors, TruncatedHeader) {
  const auto msg = ErrorOf(Write("head.safetensors", bytes_.substr(0, 20)));
  EXPECT_NE(msg.find("header length"), std::string::npos) << msg;
}

TEST_F(BrokenSafetensors, TinyFile) {
  EXPECT_NE(ErrorOf(Write("tiny.safetensors", "abc")).find("too small"), std::string::npos);
}

TEST_F(BrokenSafetensors, GarbageHeader) {
  std::string bad = bytes_;
  bad[8] = '{';
  bad[9] = '!';
  EXPECT_NE(ErrorOf(Write("garbage.safetensors", bad)).find("cannot parse"), std::string::npos);
}

// A shape whose element count wraps 64 bits to a small number (here 2^32 x 2^32 x 4 = 2^66 wraps
// to 0 elements, matching an empty data range) is refused by name instead of reaching LibTorch.
TEST_F(BrokenSafetensors, ShapeWhoseSizeOverflowsIsRefused) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}})";
  std::string file(8, '\0');
  const uint64_t len = header.size();
  std::memcpy(file.data(), &len, 8);
  const auto msg = ErrorOf(Write("overflow.safetensors", file + header));
  EXPECT_NE(msg.find("tensor 'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more elements than a tensor can hold"), std::string::npos) << msg;
}

TEST_F(BrokenSafetensors, MissingFile) {
  EXPECT_NE(ErrorOf(dir_ / "nope.safetensors").find("not found"), std::string::npos);
}

}  // namespace
}  // namespace streamrecon::models
