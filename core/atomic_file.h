// Writing files atomically: a writer fills a temporary sibling, which is renamed over the target,
// so readers never see a half-written export and a failed write leaves the old file in place.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace streamrecon {

// Calls writer(tmp) with a fresh path in the target's folder that keeps the target's extension
// ("points.ply" -> "points.tmp-<pid>-<n>.ply", so libraries that pick a format by extension work),
// then renames tmp over path. If the writer throws, or leaves no file, or the rename fails, the
// temporary is removed and the error propagates (FileError for the latter two). Throws FileError
// naming the folder when it does not exist or is not writable.
void WriteFileAtomically(const std::filesystem::path& path,
                         const std::function<void(const std::filesystem::path& tmp)>& writer);

// Creates `dir` if needed and checks that a file can be written in it (before long work starts);
// throws FileError naming the folder otherwise.
void EnsureWritableFolder(const std::filesystem::path& dir);

// Checks, without creating anything, that `dir` is a writable folder or could be created as one
// (its nearest existing ancestor is a writable folder); throws FileError naming the folder.
void CheckOutputFolder(const std::filesystem::path& dir);

// Creates `dir` and removes what an earlier command left there under the given names (files, or
// folders removed whole), so that a rerun into the same folder leaves no stale output. Returns how
// many entries were removed. Nothing else in the folder is touched.
int RemoveEarlierOutputs(const std::filesystem::path& dir, const std::vector<std::string>& names);

// Writes content (as bytes) to path atomically; throws FileError when the write fails.
void WriteTextAtomically(const std::filesystem::path& path, const std::string& content);

}  // namespace streamrecon
