// Checks a viewer screenshot for tests/viewer_test.sh: the PNG has the expected size, and the
// area right of the panel (x >= panel) is not a single colour, i.e. something was drawn there.
//   png_check FILE WIDTH HEIGHT PANEL_WIDTH   -> exit 0 when fine, 1 with a message otherwise
#include <stb/stb_image.h>

#include <cstdio>
#include <cstdlib>
#include <set>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: png_check FILE WIDTH HEIGHT PANEL_WIDTH\n");
    return 2;
  }
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
  // Distinct colours and pixels differing from the top-right corner (the background).
  std::set<unsigned> colours;
  long differing = 0;
  const unsigned char* corner = pixels + (static_cast<long>(w) - 1) * 3;
  for (int y = 0; y < h; ++y) {
    for (int x = panel; x < w; ++x) {
      const unsigned char* p = pixels + (static_cast<long>(y) * w + x) * 3;
      colours.insert(p[0] << 16 | p[1] << 8 | p[2]);
      if (p[0] != corner[0] || p[1] != corner[1] || p[2] != corner[2]) ++differing;
    }
  }
  std::printf("points area (x >= %d): %zu distinct colours, %ld pixels differ from the background\n", panel,
              colours.size(), differing);
  if (colours.size() < 8 || differing < 200) {
    std::fprintf(stderr, "FAIL: expected points drawn right of the panel, found %zu colour(s) and %ld "
                 "non-background pixels\n", colours.size(), differing);
    ++failures;
  }
  stbi_image_free(pixels);
  return failures == 0 ? 0 : 1;
}
