#include "core/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <fstream>

#include "core/errors.h"
#include "core/interrupt.h"

namespace streamrecon {
namespace fs = std::filesystem;

namespace {

// A path next to `path` that does not exist yet, unique within this process and across processes.
fs::path TemporarySibling(const fs::path& path) {
  static std::atomic<uint64_t> counter{0};
  for (;;) {
    const std::string name = path.stem().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                             std::to_string(counter++) + path.extension().string();
    const fs::path tmp = path.parent_path() / name;
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(tmp, ec))) return tmp;
  }
}

}  // namespace

void WriteFileAtomically(const fs::path& path,
                         const std::function<void(const fs::path& tmp)>& writer) {
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw FileError("cannot write " + path.string() + ": expected folder " + folder.string() +
                    " to exist, found " + (fs::exists(folder, ec) ? "a non-folder" : "nothing"));
  }
  if (::access(folder.c_str(), W_OK | X_OK) != 0) {
    throw FileError("cannot write " + path.string() + ": folder " + folder.string() +
                    " is not writable");
  }

  const fs::path tmp = TemporarySibling(path);
  // A second Ctrl-C ends the process at once: it removes this file first (core/interrupt.h).
  RegisterTemporaryFile(tmp);
  struct Unregister {
    const fs::path& tmp;
    ~Unregister() { UnregisterTemporaryFile(tmp); }
  } unregister{tmp};
  try {
    writer(tmp);
    if (!fs::is_regular_file(tmp, ec)) {
      throw FileError("cannot write " + path.string() + ": expected the writer to create " +
                      tmp.string() + ", found no file");
    }
    fs::rename(tmp, path, ec);
    if (ec) {
      throw FileError("cannot write " + path.string() + ": renaming " + tmp.string() +
                      " over it failed: " + ec.message());
    }
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

void WriteTextAtomically(const fs::path& path, const std::string& content) {
  WriteFileAtomically(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
      throw FileError("cannot write " + path.string() + ": writing " +
                      std::to_string(content.size()) + " bytes to " + tmp.string() + " failed");
    }
  });
}

void EnsureWritableFolder(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    throw FileError("cannot create the output folder " + dir.string() + ": " + (ec ? ec.message() : "not a folder"));
  const std::filesystem::path probe = dir / ".streamrecon_write_test";
  {
    std::ofstream out(probe);
    if (!(out << "ok")) throw FileError("the output folder " + dir.string() + " is not writable");
  }
  std::filesystem::remove(probe, ec);
}

void CheckOutputFolder(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) throw FileError("the output folder " + dir.string() + " exists but is not a folder");
    if (::access(dir.c_str(), W_OK | X_OK) != 0) throw FileError("the output folder " + dir.string() + " is not writable");
    return;
  }
  fs::path ancestor = fs::absolute(dir, ec).parent_path();
  while (!ancestor.empty() && !fs::exists(ancestor, ec)) ancestor = ancestor.parent_path();
  if (ancestor.empty() || !fs::is_directory(ancestor, ec))
    throw FileError("cannot create the output folder " + dir.string() + ": " + ancestor.string() + " is not a folder");
  if (::access(ancestor.c_str(), W_OK | X_OK) != 0)
    throw FileError("cannot create the output folder " + dir.string() + ": " + ancestor.string() + " is not writable");
}

int RemoveEarlierOutputs(const std::filesystem::path& dir, const std::vector<std::string>& names) {
  namespace fs = std::filesystem;
  EnsureWritableFolder(dir);
  int removed = 0;
  for (const auto& name : names) {
    std::error_code ec;
    const fs::path p = dir / name;
    if (!fs::exists(fs::symlink_status(p, ec))) continue;
    const auto n = fs::remove_all(p, ec);
    if (ec) throw FileError("cannot remove the earlier output " + p.string() + ": " + ec.message());
    removed += n > 0 ? 1 : 0;
  }
  return removed;
}

}  // namespace streamrecon
