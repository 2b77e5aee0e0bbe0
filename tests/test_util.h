// Helpers shared by the test suites: where the shared fixtures are, and a skip when absent.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace streamrecon::testing {

inline std::filesystem::path SharedDir() { return std::filesystem::path(STREAMRECON_SHARED_DIR); }

inline std::filesystem::path ParityDir() { return SharedDir() / "fixtures" / "parity"; }

// The repository's own test inputs (e.g. tests/fuzz/corpus/), always present.
inline std::filesystem::path SourceDir() { return std::filesystem::path(STREAMRECON_SOURCE_DIR); }

inline std::filesystem::path SamplesDir() { return SharedDir() / "samples"; }

// A fresh scratch folder for one test under the build tree: test_scratch/NAME/SUITE.TEST inside a
// running test, so that tests of one suite that ctest runs in parallel (each its own process)
// never remove each other's files.
inline std::filesystem::path ScratchDir(const std::string& name) {
  auto dir = std::filesystem::path(STREAMRECON_BINARY_DIR) / "test_scratch" / name;
  if (const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info()) {
    std::string leaf = std::string(test->test_suite_name()) + "." + test->name();
    for (char& c : leaf)
      if (c == '/') c = '_';  // (parameterised names)
    dir /= leaf;
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace streamrecon::testing

// Skips the current test with a visible reason when the shared fixtures are absent.
#define STREAMRECON_REQUIRE_SHARED(path)                                                        \
  do {                                                                                          \
    if (!std::filesystem::exists(path)) {                                                       \
      GTEST_SKIP() << "shared fixture not found: " << (path)                                   \
                   << " (tests that need ../shared skip without it)";                           \
    }                                                                                           \
  } while (0)
