// SHA-256 of a file through OpenSSL's EVP digest interface.
#include "core/file_hash.h"

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include "core/errors.h"

namespace streamrecon {

std::string Sha256OfFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError("cannot open '" + path.string() + "' to hash it");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1) throw Error("OpenSSL: cannot start a SHA-256 digest");
  std::vector<char> block(4 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    if (in.gcount() > 0 && EVP_DigestUpdate(context.get(), block.data(), static_cast<size_t>(in.gcount())) != 1)
      throw Error("OpenSSL: SHA-256 update failed");
  }
  if (in.bad()) throw FileError("cannot read '" + path.string() + "' to hash it: I/O error");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(context.get(), digest, &length) != 1) throw Error("OpenSSL: SHA-256 final failed");
  std::string hex;
  char pair[3];
  for (unsigned int i = 0; i < length; ++i) {
    std::snprintf(pair, sizeof pair, "%02x", digest[i]);
    hex += pair;
  }
  return hex;
}

}  // namespace streamrecon
