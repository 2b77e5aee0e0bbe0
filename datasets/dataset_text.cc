// Text formats of ground-truth datasets (see dataset_text.h).
#include "datasets/dataset_text.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/errors.h"
#include "core/geometry.h"

namespace streamrecon::datasets {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void LineError(const fs::path& file, const TextLine& line,
                            const std::string& expected) {
  std::string shown = line.text.size() > 120 ? line.text.substr(0, 120) + "..." : line.text;
  throw FileError(file.string() + " line " + std::to_string(line.number) + ": expected " +
                  expected + ", found '" + shown + "'");
}

// A whole word as a double ("nan" and "inf" included); false when it is not a number.
bool ParseDouble(const std::string& word, double* value) {
  const char* begin = word.c_str();
  char* end = nullptr;
  errno = 0;
  *value = std::strtod(begin, &end);
  return end != begin && *end == '\0' && errno != ERANGE;
}

std::vector<double> ParseNumbers(const fs::path& file, const TextLine& line, size_t first,
                                 size_t count, const std::string& expected) {
  if (line.words.size() != first + count) LineError(file, line, expected);
  std::vector<double> values(count);
  for (size_t k = 0; k < count; ++k) {
    if (!ParseDouble(line.words[first + k], &values[k])) LineError(file, line, expected);
  }
  return values;
}

}  // namespace

std::vector<TextLine> ReadDataLines(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw FileError("cannot open '" + file.string() + "': expected a readable text file");
  std::vector<TextLine> lines;
  std::string text;
  for (int number = 1; std::getline(in, text); ++number) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    std::string spaced = text;
    std::replace(spaced.begin(), spaced.end(), ',', ' ');
    std::istringstream words(spaced);
    TextLine line{number, text, {}};
    for (std::string word; words >> word;) line.words.push_back(word);
    if (line.words.empty() || line.words[0][0] == '#') continue;
    lines.push_back(std::move(line));
  }
  if (in.bad()) throw FileError("cannot read '" + file.string() + "': I/O error");
  return lines;
}

bool IsFinite(const Rigid3& T) {
  return std::all_of(T.R.begin(), T.R.end(), [](double v) { return std::isfinite(v); }) &&
         std::all_of(T.t.begin(), T.t.end(), [](double v) { return std::isfinite(v); });
}

// Four lines of a 4x4 row-major world_from_cam, starting at lines[first]. A finite matrix must
// end in the row 0 0 0 1; non-finite matrices (invalid poses in ScanNet) are returned as they
// are for the caller to drop.
Rigid3 ParseMatrixLines(const fs::path& file, const std::vector<TextLine>& lines, size_t first) {
  const std::string expected = "a row of a 4x4 camera-to-world matrix (4 numbers)";
  Rigid3 T;
  for (int r = 0; r < 4; ++r) {
    const std::vector<double> row = ParseNumbers(file, lines[first + r], 0, 4, expected);
    if (r < 3) {
      for (int c = 0; c < 3; ++c) T.R[r * 3 + c] = row[c];
      T.t[r] = row[3];
    } else if (std::all_of(row.begin(), row.end(), [](double v) { return std::isfinite(v); }) &&
               (std::abs(row[0]) > 1e-6 || std::abs(row[1]) > 1e-6 || std::abs(row[2]) > 1e-6 ||
                std::abs(row[3] - 1) > 1e-6)) {
      LineError(file, lines[first + r], "the last matrix row 0 0 0 1");
    }
  }
  return T;
}

// A file holding one 4x4 matrix (7-Scenes frame-*.pose.txt, ScanNet pose/*.txt).
Rigid3 ReadMatrixFile(const fs::path& file) {
  const std::vector<TextLine> lines = ReadDataLines(file);
  if (lines.size() != 4) {
    throw FileError(file.string() + ": expected a 4x4 camera-to-world matrix (4 lines of 4 "
                    "numbers), found " + std::to_string(lines.size()) + " non-empty lines");
  }
  return ParseMatrixLines(file, lines, 0);
}

// "fx fy cx cy", a 3x3 or a 4x4 matrix (any line breaks).
Intrinsics ReadIntrinsicsFile(const fs::path& file) {
  std::vector<double> values;
  for (const TextLine& line : ReadDataLines(file)) {
    for (const std::string& word : line.words) {
      double v = 0;
      if (!ParseDouble(word, &v) || !std::isfinite(v)) {
        LineError(file, line, "finite numbers (fx fy cx cy, or a 3x3 or 4x4 camera matrix)");
      }
      values.push_back(v);
    }
  }
  Intrinsics k;
  if (values.size() == 4) {
    k = {values[0], values[1], values[2], values[3]};
  } else if (values.size() == 9 || values.size() == 16) {
    const size_t n = values.size() == 9 ? 3 : 4;
    k = {values[0], values[n + 1], values[2], values[n + 2]};
  } else {
    throw FileError(file.string() + ": expected fx fy cx cy (4 numbers) or a 3x3 / 4x4 camera "
                    "matrix (9 / 16 numbers), found " + std::to_string(values.size()) +
                    " numbers");
  }
  if (!(k.fx > 0) || !(k.fy > 0)) {
    throw FileError(file.string() + ": expected positive focal lengths, found fx = " +
                    std::to_string(k.fx) + ", fy = " + std::to_string(k.fy));
  }
  return k;
}

double ReadFocalFile(const fs::path& file) {
  const std::vector<TextLine> lines = ReadDataLines(file);
  if (lines.size() != 1) {
    throw FileError(file.string() + ": expected one line with the focal length in pixels, "
                    "found " + std::to_string(lines.size()) + " lines");
  }
  const double f = ParseNumbers(file, lines[0], 0, 1, "one focal length in pixels")[0];
  if (!(f > 0) || !std::isfinite(f)) LineError(file, lines[0], "a positive focal length");
  return f;
}

std::vector<Stamped> ReadStampedList(const fs::path& file) {
  std::vector<Stamped> entries;
  for (const TextLine& line : ReadDataLines(file)) {
    double t = 0;
    if (line.words.size() != 2 || !ParseDouble(line.words[0], &t) || !std::isfinite(t)) {
      LineError(file, line, "'timestamp path' (a number and a file name)");
    }
    entries.push_back({t, line.words[1], line.number});
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Stamped& a, const Stamped& b) { return a.timestamp < b.timestamp; });
  return entries;
}

std::vector<StampedPose> ReadTumPoses(const fs::path& file) {
  const std::string expected = "'timestamp tx ty tz qx qy qz qw' (8 finite numbers)";
  std::vector<StampedPose> poses;
  for (const TextLine& line : ReadDataLines(file)) {
    const std::vector<double> v = ParseNumbers(file, line, 0, 8, expected);
    if (!std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); })) {
      LineError(file, line, expected);
    }
    StampedPose pose;
    pose.timestamp = v[0];
    pose.world_from_cam.t = {v[1], v[2], v[3]};
    try {
      pose.world_from_cam.R = geometry::QuaternionToRotation({v[4], v[5], v[6], v[7]});
    } catch (const Error&) {
      LineError(file, line, "a quaternion qx qy qz qw with a non-zero norm");
    }
    poses.push_back(pose);
  }
  if (poses.empty()) throw FileError(file.string() + ": expected poses, found none");
  std::stable_sort(poses.begin(), poses.end(), [](const StampedPose& a, const StampedPose& b) {
    return a.timestamp < b.timestamp;
  });
  return poses;
}

}  // namespace streamrecon::datasets
