// Model input sizing and resizing (OpenCV bicubic, or a bilinear fallback without OpenCV).
#include "datasets/preprocess.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/errors.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace streamrecon::datasets {

bool ParsePixelSize(const std::string& text, int* width, int* height) {
  const size_t x = text.find('x');
  auto whole_int = [](const std::string& s, int* out) {
    size_t used = 0;
    try {
      *out = std::stoi(s, &used);
    } catch (const std::exception&) {
      return false;
    }
    return used == s.size();
  };
  *height = 0;
  return whole_int(text.substr(0, x), width) && (x == std::string::npos || whole_int(text.substr(x + 1), height));
}

namespace {

// Largest derived model input height; beyond it the aspect ratio is surely a mistake.
constexpr int kMaxDerivedHeight = 16384;

void CheckImage(const RgbImage& image, const char* where) {
  if (image.width <= 0 || image.height <= 0 ||
      image.data.size() != static_cast<size_t>(image.width) * image.height * 3) {
    throw Error(std::string(where) + ": expected an RGB image with width * height * 3 bytes, "
                "found " + std::to_string(image.width) + " x " + std::to_string(image.height) +
                " with " + std::to_string(image.data.size()) + " bytes");
  }
}

#ifndef STREAMRECON_HAVE_OPENCV
// Bilinear resize, pixel centres at +0.5 (align_corners = false), borders clamped.
RgbImage ResizeBilinear(const RgbImage& src, int width, int height) {
  struct Tap {
    int i0, i1;
    float w1;
  };
  auto taps = [](int src_size, int dst_size) {
    std::vector<Tap> out(dst_size);
    const double scale = static_cast<double>(src_size) / dst_size;
    for (int d = 0; d < dst_size; ++d) {
      const double s = std::clamp((d + 0.5) * scale - 0.5, 0.0, src_size - 1.0);
      const int i0 = static_cast<int>(s);
      out[d] = {i0, std::min(i0 + 1, src_size - 1), static_cast<float>(s - i0)};
    }
    return out;
  };
  const std::vector<Tap> xs = taps(src.width, width);
  const std::vector<Tap> ys = taps(src.height, height);
  RgbImage dst;
  dst.width = width;
  dst.height = height;
  dst.data.resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int sx, int sy) -> float { return src.pixel(sx, sy)[c]; };
        const float top =
            at(xs[x].i0, ys[y].i0) * (1 - xs[x].w1) + at(xs[x].i1, ys[y].i0) * xs[x].w1;
        const float bottom =
            at(xs[x].i0, ys[y].i1) * (1 - xs[x].w1) + at(xs[x].i1, ys[y].i1) * xs[x].w1;
        const float value = top * (1 - ys[y].w1) + bottom * ys[y].w1;
        dst.data[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>(std::lround(std::clamp(value, 0.0f, 255.0f)));
      }
    }
  }
  return dst;
}
#endif

}  // namespace

void PreprocessOptions::Check() const {
  if (patch <= 0) {
    throw OptionError("PreprocessOptions.patch: expected a positive patch size, got " +
                      std::to_string(patch));
  }
  // A side that does not fit the patch grid: named, with the nearest sides that do.
  auto fits = [&](const char* side, int value) {
    if (value > 0 && value % patch == 0) return;
    const int below = value / patch * patch, above = std::max(below + patch, patch);
    throw OptionError(std::string("the ") + side + " " + std::to_string(value) +
                      " is not a multiple of the model's patch size " + std::to_string(patch) +
                      " (try " + (below > 0 ? std::to_string(below) + " or " : std::string()) +
                      std::to_string(above) + ")");
  };
  fits("width", target_width);
  if (target_height != 0) fits("height", target_height);  // (0: from the frames' aspect)
}

std::pair<int, int> ModelInputSize(int width, int height, const PreprocessOptions& options) {
  options.Check();
  if (width <= 0 || height <= 0) {
    throw Error("ModelInputSize: expected a positive frame size, got " + std::to_string(width) +
                " x " + std::to_string(height));
  }
  if (options.target_height > 0) return {options.target_width, options.target_height};
  // Same order of operations as the reference: h * (518 / w) / 14, rounded half to even.
  const double patches =
      std::nearbyint(height * (static_cast<double>(options.target_width) / width) / options.patch);
  if (patches * options.patch > kMaxDerivedHeight) {
    throw Error("ModelInputSize: a " + std::to_string(width) + " x " + std::to_string(height) +
                " frame would need a model input height above " +
                std::to_string(kMaxDerivedHeight) + " pixels; expected a less extreme aspect "
                "ratio or an explicit target_height");
  }
  return {options.target_width, std::max(1, static_cast<int>(patches)) * options.patch};
}

RgbImage ResizeForModel(const RgbImage& image, const PreprocessOptions& options) {
  CheckImage(image, "ResizeForModel");
  const auto [width, height] = ModelInputSize(image.width, image.height, options);
  if (width == image.width && height == image.height) return image;
#ifdef STREAMRECON_HAVE_OPENCV
  const cv::Mat src(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.data.data()));
  RgbImage out;
  out.width = width;
  out.height = height;
  out.data.resize(static_cast<size_t>(width) * height * 3);
  cv::Mat dst(height, width, CV_8UC3, out.data.data());
  cv::resize(src, dst, dst.size(), 0, 0, cv::INTER_CUBIC);
  return out;
#else
  return ResizeBilinear(image, width, height);
#endif
}

std::vector<float> ToChwFloat(const RgbImage& image) {
  CheckImage(image, "ToChwFloat");
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  std::vector<float> chw(plane * 3);
  for (size_t i = 0; i < plane; ++i) {
    for (size_t c = 0; c < 3; ++c) chw[c * plane + i] = image.data[i * 3 + c] / 255.0f;
  }
  return chw;
}

}  // namespace streamrecon::datasets
