// Checks a viewer screenshot for tests/viewer_test.sh: the PNG has the expected size, and the
// area right of the panel (x >= panel) shows the point cloud itself: enough pixels, in enough
// distinct colours, that are neither the background nor one of the overlay colours given (the
// camera frusta and the trajectory are drawn in a few fixed colours, and would satisfy a check
// for "something was drawn" on their own).
//   png_check FILE WIDTH HEIGHT PANEL_WIDTH [RRGGBB...]  -> exit 0 when fine, 1 with a message otherwise
#include <stb/stb_image.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: png_check FILE WIDTH HEIGHT PANEL_WIDTH [OVERLAY_RRGGBB...]\n");
    return 2;
  }
  std::vector<unsigned> overlay;
  for (int i = 5; i < argc; ++i) overlay.push_back(static_cast<unsigned>(std::strtoul(argv[i], nullptr, 16)));
  // Within 3 levels per channel of an overlay colour (the GL's rounding of the float colours).
  const auto is_overlay = [&overlay](const unsigned char* p) {
    for (unsigned c : overlay)
      if (std::abs(p[0] - int(c >> 16 & 255)) <= 3 && std::abs(p[1] - int(c >> 8 & 255)) <= 3 && std::abs(p[2] - int(c & 255)) <= 3)
        return true;
    return false;
  };
  const int want_w = std::atoi(argv[2]), want_h = std::atoi(argv[3]), panel = std::atoi(argv[4]);
  int w = 0, h = 0, channels = 0;
  unsigned char* pixels = stbi_load(argv[1], &w, &h, &channels, 3);
  if (!pixels) {
    std::fprintf(stderr, "FAIL: cannot read %s as an image: %s\n", argv[1], stbi_failure_reason());
    return 1;
  }
  std::printf("%s: %dx%d\n", argv[1], w, h);
  int failures = 0;
  if (w != want_w || h != want_h) {
    std::fprintf(stderr, "FAIL: expected a %dx%d image (the window), found %dx%d\n", want_w, want_h, w, h);
    ++failures;
  }
  // Cloud pixels: neither the background (the top-right corner) nor an overlay colour.
  std::set<unsigned> colours;
  long differing = 0;
  const unsigned char* corner = pixels + (static_cast<long>(w) - 1) * 3;
  for (int y = 0; y < h; ++y) {
    for (int x = panel; x < w; ++x) {
      const unsigned char* p = pixels + (static_cast<long>(y) * w + x) * 3;
      if ((p[0] != corner[0] || p[1] != corner[1] || p[2] != corner[2]) && !is_overlay(p)) {
        ++differing;
        colours.insert(p[0] << 16 | p[1] << 8 | p[2]);
      }
    }
  }
  std::printf("points area (x >= %d): %ld cloud pixels in %zu distinct colours (background and %zu overlay colour(s) excluded)\n",
              panel, differing, colours.size(), overlay.size());
  if (colours.size() < 32 || differing < 1000) {
    std::fprintf(stderr, "FAIL: expected the point cloud drawn right of the panel (>= 1000 pixels in >= 32 colours), found "
                 "%ld pixel(s) in %zu colour(s)\n", differing, colours.size());
    ++failures;
  }
  stbi_image_free(pixels);
  return failures == 0 ? 0 : 1;
}
