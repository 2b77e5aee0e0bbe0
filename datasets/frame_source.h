// Frame sources: image folders, glob patterns, video files and cameras behind one pull
// interface that yields 8-bit RGB frames in stream order. Decoding goes through OpenCV; builds
// without it throw a clear Error for these sources (the synthetic source still works).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/types.h"

namespace streamrecon::datasets {

// Options shared by the sources that OpenFrameSource opens.
struct SourceOptions {
  // Take every K-th frame of the underlying stream (1 = every frame).
  int every = 1;
  // Stop after delivering this many frames (-1 = no limit).
  int64_t max_frames = -1;
  // Receives one-time notes about conversions (grey, 16-bit, float or alpha images converted
  // to 8-bit RGB), once per kind and source. Empty = silent.
  std::function<void(const std::string&)> on_note;
  // Damaged input: an image that cannot be decoded, or whose file is cut short (a JPEG without
  // its end marker, a PNG without IEND), is skipped and reported through on_skip (naming the
  // file and frame) unless strict, where it is a FileError as before.
  bool strict = false;
  std::function<void(const std::string&)> on_skip;
  // Images smaller than this in either direction are an error (the model's patch size: a smaller
  // image holds less than one patch).
  int min_side = 14;

  // Throws OptionError when a value is out of range.
  void Check() const;
};

// Silences the decoders' own logging (OpenCV, FFmpeg, GStreamer) unless verbose, so that a
// problem is reported once, in StreamRecon's words. Call before opening sources.
void QuietDecoderLogs(bool verbose);

// A stream of frames. Not thread-safe: one consumer calls Next() until it returns nullopt.
class FrameSource {
 public:
  virtual ~FrameSource() = default;

  // The next frame (image [H, W, 3] RGB, index 0, 1, 2, ... in delivery order), or nullopt at
  // the end of the stream. Throws FileError when a file or video frame cannot be decoded;
  // nothing is skipped silently.
  virtual std::optional<Frame> Next() = 0;

  // Frames skipped so far as damaged (SourceOptions::on_skip).
  virtual int64_t skipped() const { return 0; }

  // How many frames Next() will deliver in total, or -1 when unknown (cameras). For videos
  // this relies on the container's frame count and may be approximate.
  virtual int64_t SizeHint() const { return -1; }

  // One line for logs, e.g. "image folder 'x' (6 images)".
  virtual std::string Describe() const = 0;
};

// Opens spec, which is one of:
//   - a folder of images (.jpg .jpeg .png .bmp .tif .tiff .webp, any case; hidden files skipped),
//     read in natural order (2.jpg before 10.jpg); images may differ in size;
//   - a glob pattern (glob(3), e.g. "frames/*.png"), image files only, natural order;
//   - a single image file (one frame);
//   - a video file (.mp4 .avi .mov .mkv .webm .m4v, or any file that is not a readable image);
//   - "camera:N" for camera index N.
// Frame names are the file name for images, "video:<k>" or "camera:<k>" with k the position in
// the underlying stream; timestamps are seconds (videos: k / fps, cameras: since opening,
// images: k). Throws FileError for a missing path, a folder without images, a glob without
// matches or a video that cannot be opened; OptionError for bad options or a bad "camera:" spec;
// Error when the build has no OpenCV.
std::unique_ptr<FrameSource> OpenFrameSource(const std::string& spec,
                                             const SourceOptions& options = {});

// Whether this build can decode images and videos (it was built with OpenCV).
bool HaveOpenCv();

}  // namespace streamrecon::datasets
