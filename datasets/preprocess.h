// Preprocessing between a FrameSource and the model: resize to a size the patch embedding
// accepts (multiples of 14, width 518 by default) and convert to planar float RGB in [0, 1].
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/types.h"

namespace streamrecon::datasets {

// How frames are sized for the model.
struct PreprocessOptions {
  // Model input width in pixels; a positive multiple of patch.
  int target_width = 518;
  // Model input height in pixels; 0 = derive from the aspect ratio as
  // round(h * target_width / w / patch) * patch (at least patch), otherwise a multiple of patch.
  int target_height = 0;
  // Patch size of the model's patch embedding.
  int patch = 14;

  // Throws OptionError when a size is not positive or not a multiple of patch (naming the side and
  // the nearest multiples).
  void Check() const;
};

// "W" or "WxH" in pixels (decimal integers): false when text is not exactly that (the numbers'
// signs and ranges are PreprocessOptions::Check's business); height 0 when absent.
bool ParsePixelSize(const std::string& text, int* width, int* height);

// The model input size {width, height} for a width x height frame; 640x480 -> {518, 392}.
// The derived height rounds half to even, like the reference's Python round().
// Throws Error when width or height is not positive.
std::pair<int, int> ModelInputSize(int width, int height, const PreprocessOptions& options);

// Resizes image [H, W, 3] to the model input size [h, w, 3]. With OpenCV: bicubic
// (cv::INTER_CUBIC, no antialiasing; the reference's PIL bicubic antialiases, which differs
// slightly when shrinking). Without OpenCV: a plain C++ bilinear resize with pixel centres at
// +0.5 and clamped borders. Throws Error when image.data does not hold width * height * 3 bytes.
RgbImage ResizeForModel(const RgbImage& image, const PreprocessOptions& options);

// image [H, W, 3] uint8 -> [3, H, W] float32 in [0, 1] (value / 255), channels R, G, B.
std::vector<float> ToChwFloat(const RgbImage& image);

}  // namespace streamrecon::datasets
