// Sequence plans: the helpers shared by the dataset format readers (see sequence_plan.h).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <utility>

#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/dataset_text.h"
#include "datasets/sequence_plan.h"

namespace streamrecon::datasets::internal {
namespace fs = std::filesystem;

std::string Lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The value of the last run of digits in s, or -1 when there is none.
int64_t LastNumber(const std::string& s) {
  size_t end = s.size();
  while (end > 0 && !std::isdigit(static_cast<unsigned char>(s[end - 1]))) --end;
  if (end == 0) return -1;
  size_t begin = end;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(s[begin - 1]))) --begin;
  if (end - begin > 15) return -1;
  return std::stoll(s.substr(begin, end - begin));
}

// Names with numbers in them sort by value (seq-2 before seq-10), then bytewise.
bool NumberedLess(const std::string& a, const std::string& b) {
  const int64_t na = LastNumber(a), nb = LastNumber(b);
  if (na != nb) return na < nb;
  return a < b;
}

// The folder's own name, also for "x/" and ".".
std::string FolderName(const fs::path& dir) {
  fs::path normal = fs::absolute(dir).lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  return normal.filename().string();
}

bool IsFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool IsFolder(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

// The entries of a folder; FileError when it cannot be listed.
std::vector<fs::path> ListFolder(const fs::path& dir) {
  std::vector<fs::path> entries;
  try {
    for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
      entries.push_back(entry.path());
    }
  } catch (const fs::filesystem_error& e) {
    throw FileError("cannot list folder '" + dir.string() + "': " + e.what());
  }
  return entries;
}

void Note(const DatasetOptions& options, const std::string& message) {
  if (options.on_note) options.on_note(message);
}

// Applies every / max_frames.
void SelectFrames(SequencePlan& plan, const DatasetOptions& options) {
  plan.available = static_cast<int64_t>(plan.frames.size());
  std::vector<FrameRecord> selected;
  for (size_t i = 0; i < plan.frames.size(); i += options.every) {
    if (options.max_frames >= 0 && static_cast<int64_t>(selected.size()) >= options.max_frames) {
      break;
    }
    selected.push_back(std::move(plan.frames[i]));
  }
  plan.frames = std::move(selected);
}

void RequireFiles(const SequencePlan& plan) {
  auto listed = [](const std::string& where) { return where.empty() ? "" : " (" + where + ")"; };
  for (const FrameRecord& record : plan.frames) {
    if (!IsFile(record.color)) {
      throw FileError(plan.origin + ": missing colour image for frame '" + record.name +
                      "': expected the file '" + record.color.string() + "'" +
                      listed(record.color_listed_at) + ", found none");
    }
    if (!IsFile(record.depth)) {
      throw FileError(plan.origin + ": missing depth for frame '" + record.name +
                      "': expected the file '" + record.depth.string() + "'" +
                      listed(record.depth_listed_at) + ", found none");
    }
  }
}

// The fields every layout's plan starts with; `kind` names the layout in messages.
SequencePlan NewPlan(DatasetLayout layout, const fs::path& dir, const std::string& kind, double depth_scale) {
  SequencePlan plan;
  plan.layout = layout;
  plan.dir = dir;
  plan.name = FolderName(dir);
  plan.origin = kind + " '" + dir.string() + "'";
  plan.depth_scale = depth_scale;
  return plan;
}

}  // namespace streamrecon::datasets::internal
