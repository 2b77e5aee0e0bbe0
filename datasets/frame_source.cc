// Frame sources over OpenCV: spec resolution (folders, globs, files, cameras) is plain C++;
// decoding needs OpenCV and is compiled only when STREAMRECON_HAVE_OPENCV is set.
#include "datasets/frame_source.h"

#include <glob.h>

#include <algorithm>
#include <cstdlib>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/errors.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <chrono>
#include <set>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <opencv2/core/utils/logger.hpp>
#endif

namespace streamrecon::datasets {
namespace fs = std::filesystem;

void SourceOptions::Check() const {
  if (every < 1) {
    throw OptionError("SourceOptions.every: expected >= 1 (take every K-th frame), got " +
                      std::to_string(every));
  }
  if (max_frames < -1) {
    throw OptionError("SourceOptions.max_frames: expected -1 (no limit) or >= 0, got " +
                      std::to_string(max_frames));
  }
}

bool HaveOpenCv() {
#ifdef STREAMRECON_HAVE_OPENCV
  return true;
#else
  return false;
#endif
}

namespace {

constexpr std::array<const char*, 7> kImageExtensions{".jpg", ".jpeg", ".png", ".bmp",
                                                      ".tif", ".tiff", ".webp"};
constexpr std::array<const char*, 6> kVideoExtensions{".mp4", ".avi",  ".mov",
                                                      ".mkv", ".webm", ".m4v"};

template <size_t N>
bool HasExtension(const fs::path& path, const std::array<const char*, N>& extensions) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
}

std::string ImageExtensionList() {
  std::string list;
  for (const char* ext : kImageExtensions) list += (list.empty() ? "" : " ") + std::string(ext);
  return list + ", any case";
}

// Natural order: digit runs compare by value (2 < 10), other characters case-insensitively;
// ties fall back to byte order so the order is total.
bool NaturalLess(const std::string& a, const std::string& b) {
  auto is_digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      size_t i_end = i, j_end = j;
      while (i_end < a.size() && is_digit(a[i_end])) ++i_end;
      while (j_end < b.size() && is_digit(b[j_end])) ++j_end;
      while (i + 1 < i_end && a[i] == '0') ++i;  // leading zeros do not change the value
      while (j + 1 < j_end && b[j] == '0') ++j;
      if (i_end - i != j_end - j) return i_end - i < j_end - j;
      const int order = a.compare(i, i_end - i, b, j, j_end - j);
      if (order != 0) return order < 0;
      i = i_end;
      j = j_end;
    } else {
      const int ca = std::tolower(static_cast<unsigned char>(a[i]));
      const int cb = std::tolower(static_cast<unsigned char>(b[j]));
      if (ca != cb) return ca < cb;
      ++i;
      ++j;
    }
  }
  if (i < a.size() || j < b.size()) return i == a.size();
  return a < b;
}

void SortNatural(std::vector<fs::path>& files) {
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
    return NaturalLess(a.string(), b.string());
  });
}

std::vector<fs::path> ListImageFolder(const fs::path& dir) {
  std::vector<fs::path> files;
  size_t others = 0;
  try {
    for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && name[0] != '.' &&
          HasExtension(entry.path(), kImageExtensions)) {
        files.push_back(entry.path());
      } else {
        ++others;
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw FileError("cannot list folder '" + dir.string() + "': " + e.what());
  }
  if (files.empty()) {
    throw FileError("no images in folder '" + dir.string() + "': looked for " +
                    ImageExtensionList() + ", found " + std::to_string(others) +
                    " other entries");
  }
  SortNatural(files);
  return files;
}

std::vector<fs::path> GlobImages(const std::string& pattern) {
  glob_t matches{};
  const int rc = glob(pattern.c_str(), 0, nullptr, &matches);
  std::vector<fs::path> files;
  const size_t total = rc == 0 ? matches.gl_pathc : 0;
  for (size_t k = 0; k < total; ++k) {
    const fs::path path(matches.gl_pathv[k]);
    std::error_code ec;
    if (fs::is_regular_file(path, ec) && HasExtension(path, kImageExtensions)) {
      files.push_back(path);
    }
  }
  globfree(&matches);
  if (rc == GLOB_NOMATCH) throw FileError("glob pattern '" + pattern + "' matches no files");
  if (rc != 0) throw FileError("cannot expand glob pattern '" + pattern + "' (read error)");
  if (files.empty()) {
    throw FileError("glob pattern '" + pattern + "' matches " + std::to_string(total) +
                    " paths but no image files: looked for " + ImageExtensionList());
  }
  SortNatural(files);
  return files;
}

// What a spec resolved to, before anything is decoded.
struct Plan {
  enum class Kind { kImages, kVideo, kImageOrVideo, kCamera };
  Kind kind = Kind::kImages;
  std::string origin;            // for messages and Describe(), e.g. "image folder 'x'"
  std::vector<fs::path> images;  // kImages
  fs::path file;                 // kVideo, kImageOrVideo
  int camera = -1;               // kCamera
};

Plan ResolveSpec(const std::string& spec) {
  Plan plan;
  const std::string camera_prefix = "camera:";
  if (spec.compare(0, camera_prefix.size(), camera_prefix) == 0) {
    const std::string index = spec.substr(camera_prefix.size());
    if (index.empty() || index.size() > 6 ||
        !std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      throw OptionError("expected camera:N with N a camera index (0, 1, ...), got '" + spec + "'");
    }
    plan.kind = Plan::Kind::kCamera;
    plan.camera = std::stoi(index);
    plan.origin = "camera " + index;
    return plan;
  }
  const fs::path path(spec);
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    throw FileError("cannot access '" + spec + "': " + ec.message());
  }
  if (fs::is_directory(status)) {
    plan.origin = "image folder '" + spec + "'";
    plan.images = ListImageFolder(path);
  } else if (fs::exists(status)) {
    plan.file = path;
    if (HasExtension(path, kVideoExtensions)) {
      plan.kind = Plan::Kind::kVideo;
      plan.origin = "video '" + spec + "'";
    } else if (HasExtension(path, kImageExtensions)) {
      plan.origin = "image '" + spec + "'";
      plan.images = {path};
    } else {
      plan.kind = Plan::Kind::kImageOrVideo;
      plan.origin = "file '" + spec + "'";
    }
  } else if (spec.find_first_of("*?[") != std::string::npos) {
    plan.origin = "glob '" + spec + "'";
    plan.images = GlobImages(spec);
  } else {
    throw FileError("path does not exist: '" + spec +
                    "' (expected an image folder, a glob pattern, an image or video file, or "
                    "camera:N)");
  }
  return plan;
}


#ifdef STREAMRECON_HAVE_OPENCV

// Applies SourceOptions.every and max_frames on top of a raw stream that can skip and read.
class SelectingSource : public FrameSource {
 public:
  explicit SelectingSource(const SourceOptions& options) : options_(options) {}

  std::optional<Frame> Next() final {
    if (ended_ || (options_.max_frames >= 0 && delivered_ >= options_.max_frames)) {
      return std::nullopt;
    }
    for (int k = 1; !ended_ && delivered_ > 0 && k < options_.every; ++k) ended_ = !SkipRaw();
    std::optional<Frame> frame = ended_ ? std::nullopt : ReadRaw(delivered_);
    if (!frame) {
      ended_ = true;
      return std::nullopt;
    }
    const RgbImage& image = frame->image;
    if (image.width < options_.min_side || image.height < options_.min_side)
      throw FileError(frame->name + " (frame " + std::to_string(delivered_) + "): the image is " + std::to_string(image.width) + "x" +
                      std::to_string(image.height) + ", smaller than the model's minimum of " + std::to_string(options_.min_side) +
                      " pixels a side");
    if (first_width_ == 0) {
      first_width_ = image.width;
      first_height_ = image.height;
    } else if ((image.width != first_width_ || image.height != first_height_) && !size_noted_) {
      size_noted_ = true;
      if (options_.on_note)
        options_.on_note(frame->name + " (frame " + std::to_string(delivered_) + ") is " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + " while the first frame was " + std::to_string(first_width_) + "x" +
                         std::to_string(first_height_) + ": frames of other sizes are resized to the first frame's model size "
                         "(stretched if the aspect differs; further frames of other sizes are not reported)");
    }
    frame->index = delivered_++;
    return frame;
  }

  int64_t skipped() const override { return skipped_; }

 protected:
  // How many frames Next() delivers from a raw stream of raw_count frames.
  int64_t Selected(int64_t raw_count) const {
    const int64_t taken = (raw_count + options_.every - 1) / options_.every;
    return options_.max_frames >= 0 ? std::min(taken, options_.max_frames) : taken;
  }

  // Steps over one raw frame without converting it; false at the end of the stream.
  virtual bool SkipRaw() = 0;
  // Decodes the next raw frame, which Next() will deliver as frame `index`; nullopt at the end.
  virtual std::optional<Frame> ReadRaw(int64_t index) = 0;

  // A damaged frame: a FileError with strict, else reported through on_skip and counted.
  void Skip(const std::string& message) {
    if (options_.strict) throw FileError(message + " (--strict)");
    ++skipped_;
    if (options_.on_skip) options_.on_skip(message + ": skipped");
  }
  const SourceOptions& options() const { return options_; }

 private:
  SourceOptions options_;
  int64_t delivered_ = 0;
  int64_t skipped_ = 0;
  bool ended_ = false;
  int first_width_ = 0, first_height_ = 0;
  bool size_noted_ = false;
};

// True when an image file is visibly cut short: a JPEG without its end-of-image marker near the
// end, a PNG without its IEND chunk (decoders return such images half-filled, without an error).
bool LooksTruncated(const fs::path& file) {
  std::string ext = file.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const bool jpeg = ext == ".jpg" || ext == ".jpeg", png = ext == ".png";
  if (!jpeg && !png) return false;
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  const std::streamoff size = in.tellg();
  if (size <= 0) return true;
  const std::streamoff tail = std::min<std::streamoff>(size, 256);
  std::string bytes(static_cast<size_t>(tail), '\0');
  in.seekg(size - tail);
  in.read(bytes.data(), tail);
  if (jpeg) return bytes.find("\xFF\xD9") == std::string::npos;
  return bytes.find("IEND") == std::string::npos;
}

// Converts decoded OpenCV images (grey, BGR or BGRA; 8-bit, 16-bit or float) to 8-bit RGB and
// notes the first conversion of each kind.
class RgbConverter {
 public:
  explicit RgbConverter(std::function<void(const std::string&)> on_note)
      : on_note_(std::move(on_note)) {}

  // what names the image in notes and errors (a path, or "video 'x' frame k").
  RgbImage Convert(const cv::Mat& decoded, const std::string& what) {
    cv::Mat eight_bit = decoded;
    if (decoded.depth() == CV_16U) {
      Note("16-bit", what + ": 16-bit image scaled to 8 bits");
      decoded.convertTo(eight_bit, CV_8U, 1.0 / 257.0);
    } else if (decoded.depth() == CV_32F || decoded.depth() == CV_64F) {
      Note("float", what + ": floating-point image taken as [0, 1] and scaled to 8 bits");
      decoded.convertTo(eight_bit, CV_8U, 255.0);
    } else if (decoded.depth() != CV_8U) {
      throw FileError(what + ": expected 8-bit, 16-bit or floating-point samples, found OpenCV "
                      "depth code " + std::to_string(decoded.depth()));
    }
    cv::Mat rgb;
    if (eight_bit.channels() == 1) {
      Note("grey", what + ": grey image converted to RGB");
      cv::cvtColor(eight_bit, rgb, cv::COLOR_GRAY2RGB);
    } else if (eight_bit.channels() == 3) {
      cv::cvtColor(eight_bit, rgb, cv::COLOR_BGR2RGB);
    } else if (eight_bit.channels() == 4) {
      Note("alpha", what + ": 4-channel image converted to RGB (alpha dropped)");
      cv::cvtColor(eight_bit, rgb, cv::COLOR_BGRA2RGB);
    } else {
      throw FileError(what + ": expected 1, 3 or 4 channels, found " +
                      std::to_string(eight_bit.channels()));
    }
    RgbImage image;
    image.width = rgb.cols;
    image.height = rgb.rows;
    image.data.assign(rgb.data, rgb.data + rgb.total() * 3);
    return image;
  }

 private:
  void Note(const std::string& kind, const std::string& message) {
    if (on_note_ && noted_.insert(kind).second) {
      on_note_(message + " (further " + kind + " images of this source are not reported)");
    }
  }

  std::function<void(const std::string&)> on_note_;
  std::set<std::string> noted_;
};

class ImageListSource final : public SelectingSource {
 public:
  ImageListSource(Plan plan, const SourceOptions& options)
      : SelectingSource(options), plan_(std::move(plan)), converter_(options.on_note) {}

  int64_t SizeHint() const override { return Selected(static_cast<int64_t>(plan_.images.size())); }

  std::string Describe() const override {
    return plan_.origin + " (" + std::to_string(plan_.images.size()) + " images)";
  }

 private:
  bool SkipRaw() override { return ++next_ < plan_.images.size(); }

  std::optional<Frame> ReadRaw(int64_t index) override {
    cv::Mat decoded;
    for (;; ++next_) {  // damaged files are skipped (or, strict, an error)
      if (next_ >= plan_.images.size()) return std::nullopt;
      const fs::path& file = plan_.images[next_];
      if (LooksTruncated(file)) {
        Skip("image '" + file.string() + "' (frame " + std::to_string(index) + " of " + plan_.origin +
             ") is cut short: its end marker is missing, so a decoder would return it partly filled");
        continue;
      }
      std::string reason = "a corrupt, truncated or unsupported file";
      try {
        decoded = cv::imread(file.string(), cv::IMREAD_UNCHANGED);
      } catch (const cv::Exception& e) {
        reason = e.what();
      }
      if (!decoded.empty()) break;
      Skip("cannot decode image '" + file.string() + "' (frame " + std::to_string(index) + " of " + plan_.origin +
           "): expected an image (" + ImageExtensionList() + "), found " + reason);
    }
    const fs::path& file = plan_.images[next_];
    Frame frame;
    frame.timestamp = static_cast<double>(next_);
    frame.name = file.filename().string();
    frame.image = converter_.Convert(decoded, file.string());
    ++next_;
    return frame;
  }

  Plan plan_;
  RgbConverter converter_;
  size_t next_ = 0;  // position of the next raw image in plan_.images
};

// A video file or a camera through cv::VideoCapture.
class CaptureSource final : public SelectingSource {
 public:
  CaptureSource(Plan plan, const SourceOptions& options)
      : SelectingSource(options),
        plan_(std::move(plan)),
        live_(plan_.kind == Plan::Kind::kCamera),
        converter_(options.on_note),
        opened_at_(std::chrono::steady_clock::now()) {
    try {
      if (live_) {
        capture_.open(plan_.camera);
      } else {
        capture_.open(plan_.file.string());
      }
    } catch (const cv::Exception&) {
      // Reported below: isOpened() is false.
    }
    if (!capture_.isOpened()) {
      if (live_) throw Error("cannot open " + plan_.origin + ": no such camera, or it is busy");
      throw FileError("cannot open " + plan_.origin + ": expected a video OpenCV can decode "
                      "(.mp4 .avi .mov .mkv .webm .m4v) or an image, found a file it cannot "
                      "open (corrupt, or a codec this OpenCV build lacks)");
    }
    fps_ = capture_.get(cv::CAP_PROP_FPS);
    if (!live_) raw_count_ = static_cast<int64_t>(capture_.get(cv::CAP_PROP_FRAME_COUNT));
  }

  int64_t SizeHint() const override { return raw_count_ > 0 ? Selected(raw_count_) : -1; }

  std::string Describe() const override {
    std::string text = plan_.origin;
    if (fps_ > 0) text += ", " + std::to_string(fps_) + " fps";
    if (raw_count_ > 0) text += ", " + std::to_string(raw_count_) + " frames";
    return text;
  }

 private:
  bool SkipRaw() override {
    if (!Guarded([&] { return capture_.grab(); })) return false;
    ++position_;
    return true;
  }

  std::optional<Frame> ReadRaw(int64_t index) override {
    cv::Mat decoded;
    if (!Guarded([&] { return capture_.read(decoded); }) || decoded.empty()) {
      if (position_ == 0) {
        throw FileError(plan_.origin + " opened but delivered no frame: expected at least one "
                        "decodable frame");
      }
      // A file cut mid-data ends early: say how much of what the container announced was read.
      if (!live_ && raw_count_ > 0 && position_ < raw_count_) {
        const std::string message = plan_.origin + " ended after " + std::to_string(position_) + " of the " +
                                    std::to_string(raw_count_) + " frames its container announces (cut short or damaged)";
        if (options().strict) throw FileError(message + " (--strict)");
        if (options().on_skip) options().on_skip(message);
      }
      return std::nullopt;
    }
    Frame frame;
    frame.name = (live_ ? "camera:" : "video:") + std::to_string(position_);
    if (live_) {
      frame.timestamp =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - opened_at_).count();
    } else {
      frame.timestamp = fps_ > 0 ? position_ / fps_ : static_cast<double>(position_);
    }
    frame.image = converter_.Convert(decoded, plan_.origin + " frame " + std::to_string(position_));
    ++position_;
    return frame;
  }

  // Runs a capture call, turning an OpenCV exception into a FileError naming the frame.
  template <typename Call>
  bool Guarded(Call call) {
    try {
      return call();
    } catch (const cv::Exception& e) {
      throw FileError("cannot decode frame " + std::to_string(position_) + " of " +
                      plan_.origin + ": " + e.what());
    }
  }

  Plan plan_;
  bool live_;
  RgbConverter converter_;
  std::chrono::steady_clock::time_point opened_at_;
  cv::VideoCapture capture_;
  double fps_ = 0.0;
  int64_t raw_count_ = -1;  // frames in the container, -1 when unknown
  int64_t position_ = 0;    // raw index of the next frame
};

std::unique_ptr<FrameSource> MakeSource(Plan plan, const SourceOptions& options) {
  if (plan.kind == Plan::Kind::kImageOrVideo && cv::haveImageReader(plan.file.string())) {
    plan.kind = Plan::Kind::kImages;
    plan.images = {plan.file};
  }
  if (plan.kind == Plan::Kind::kImages) {
    return std::make_unique<ImageListSource>(std::move(plan), options);
  }
  return std::make_unique<CaptureSource>(std::move(plan), options);
}

#else

std::unique_ptr<FrameSource> MakeSource(Plan plan, const SourceOptions&) {
  throw Error("reading " + plan.origin + " needs OpenCV, but this build has none (reconfigure "
              "with OpenCV installed and STREAMRECON_OPENCV=ON); the synthetic source works "
              "without it");
}

#endif

}  // namespace

std::unique_ptr<FrameSource> OpenFrameSource(const std::string& spec,
                                             const SourceOptions& options) {
  options.Check();
  return MakeSource(ResolveSpec(spec), options);
}


void QuietDecoderLogs(bool verbose) {
  if (verbose) return;
  ::setenv("OPENCV_FFMPEG_LOGLEVEL", "-8", 0);  // AV_LOG_QUIET
  ::setenv("OPENCV_LOG_LEVEL", "SILENT", 0);
  ::setenv("GST_DEBUG", "0", 0);
#ifdef STREAMRECON_HAVE_OPENCV
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
#endif
}

}  // namespace streamrecon::datasets
