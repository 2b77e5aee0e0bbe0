// Shared by the libFuzzer targets. The readers under test take file paths (that is how users
// reach them), so each input is written to one temporary file per process first; the file is
// removed when the fuzzer exits.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace streamrecon::fuzz {

inline const std::filesystem::path& InputFile() {
  static const std::filesystem::path path = [] {
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove(InputFile(), ec);
    });
    return std::filesystem::temp_directory_path() / ("streamrecon-fuzz-" + std::to_string(::getpid()) + ".in");
  }();
  return path;
}

// Writes the input to the process's temporary file and returns its path.
inline std::filesystem::path WriteInput(const uint8_t* data, size_t size) {
  const std::filesystem::path& path = InputFile();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();  // the harness itself failed, not the reader
  return path;
}

}  // namespace streamrecon::fuzz
