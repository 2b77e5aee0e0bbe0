// Content hashes of files, for provenance records (run.json names the weights by SHA-256).
#pragma once

#include <filesystem>
#include <string>

namespace streamrecon {

// The SHA-256 of a file's bytes as 64 lowercase hex digits (OpenSSL's libcrypto, read in 4 MiB
// blocks). Throws FileError naming the file when it cannot be read.
std::string Sha256OfFile(const std::filesystem::path& path);

}  // namespace streamrecon
