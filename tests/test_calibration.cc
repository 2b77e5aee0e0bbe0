// Known camera intrinsics: the four-number form, COLMAP and OpenCV files, errors, and the scaling
// to the model's input size (shown by projection: a point lands on the same place of the image).
#include <gtest/gtest.h>

#include <fstream>

#include "core/errors.h"
#include "datasets/calibration.h"
#include "tests/test_util.h"

namespace streamrecon::datasets {
namespace {

namespace fs = std::filesystem;

TEST(Calibration, FourNumbers) {
  const KnownCamera c = ParseIntrinsics("525,526.5,319.5,239.5");
  EXPECT_DOUBLE_EQ(c.k.fx, 525);
  EXPECT_DOUBLE_EQ(c.k.fy, 526.5);
  EXPECT_DOUBLE_EQ(c.k.cx, 319.5);
  EXPECT_DOUBLE_EQ(c.k.cy, 239.5);
  EXPECT_EQ(c.width, 0);
  EXPECT_TRUE(c.note.empty());
}

TEST(Calibration, ColmapCamerasTxt) {
  const fs::path dir = testing::ScratchDir("calibration_colmap");
  std::ofstream(dir / "cameras.txt") << "# Camera list\n# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n1 PINHOLE 640 480 500 501 320 240\n";
  KnownCamera c = ParseIntrinsics((dir / "cameras.txt").string());
  EXPECT_EQ(c.width, 640);
  EXPECT_EQ(c.height, 480);
  EXPECT_DOUBLE_EQ(c.k.fx, 500);
  EXPECT_DOUBLE_EQ(c.k.fy, 501);
  EXPECT_DOUBLE_EQ(c.k.cx, 320);  // as written (our COLMAP export writes the same convention)
  EXPECT_DOUBLE_EQ(c.k.cy, 240);
  std::ofstream(dir / "radial.txt") << "7 SIMPLE_RADIAL 320 240 250 160 120 0.01\n";
  c = ParseIntrinsics((dir / "radial.txt").string());
  EXPECT_DOUBLE_EQ(c.k.fx, 250);
  EXPECT_DOUBLE_EQ(c.k.fy, 250);
  EXPECT_NE(c.note.find("distortion"), std::string::npos) << c.note;
  std::ofstream(dir / "fisheye.txt") << "1 OPENCV_FISHEYE 640 480 500 500 320 240 0 0 0 0\n";
  try {
    ParseIntrinsics((dir / "fisheye.txt").string());
    FAIL() << "a fisheye camera was read as a pinhole";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("fisheye.txt:1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("OPENCV_FISHEYE"), std::string::npos) << e.what();
  }
}

TEST(Calibration, BadValuesAreClearErrors) {
  EXPECT_THROW(ParseIntrinsics("525,525,320"), OptionError);           // three numbers, no such file
  EXPECT_THROW(ParseIntrinsics("525,-525,320,240"), OptionError);      // negative focal
  EXPECT_THROW(ParseIntrinsics("525,525,320,nan"), OptionError);       // not finite
  try {
    ParseIntrinsics("fx=525");
    FAIL();
  } catch (const OptionError& e) {
    EXPECT_NE(std::string(e.what()).find("expected fx,fy,cx,cy"), std::string::npos) << e.what();
  }
}

// A point seen at pixel (u, v) of the input is at ((u + 0.5) s - 0.5, (v + 0.5) s - 0.5) in the
// resized image (pixel centres map onto pixel centres); the scaled camera projects it there.
TEST(Calibration, ScalingKeepsTheProjectionOfAPoint) {
  const Intrinsics k{500, 480, 300.25, 241.75};
  const Intrinsics s = ScaleIntrinsics(k, 640, 480, 518, 392);
  const double x = 0.3, y = -0.2, z = 2.5;
  const double u = k.fx * x / z + k.cx, v = k.fy * y / z + k.cy;
  const double sx = 518.0 / 640, sy = 392.0 / 480;
  EXPECT_NEAR(s.fx * x / z + s.cx, (u + 0.5) * sx - 0.5, 1e-12);
  EXPECT_NEAR(s.fy * y / z + s.cy, (v + 0.5) * sy - 0.5, 1e-12);
}

}  // namespace
}  // namespace streamrecon::datasets
