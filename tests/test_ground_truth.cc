// Tests of the ground-truth sequences: the synthetic source, a TUM-layout round trip, readers of
// 7-Scenes and RGB-D folders built from synthetic frames, and clear errors for broken folders.
#include "datasets/ground_truth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/geometry.h"
#include "test_util.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace streamrecon::datasets {
namespace {

namespace fs = std::filesystem;

DatasetOptions SmallSynthetic(int frames) {
  DatasetOptions options;
  options.synthetic.width = 64;
  options.synthetic.height = 48;
  options.synthetic.frames = frames;
  options.synthetic.seed = 3;
  return options;
}

std::vector<GroundTruthFrame> ReadAll(GroundTruthSource& source) {
  std::vector<GroundTruthFrame> frames;
  while (std::optional<GroundTruthFrame> frame = source.Next()) frames.push_back(std::move(*frame));
  return frames;
}

std::vector<GroundTruthFrame> SyntheticFrames(int frames) {
  return ReadAll(*OpenDataset("synthetic", SmallSynthetic(frames)));
}

// Runs call, expecting a FileError whose message holds every phrase.
void ExpectFileError(const std::function<void()>& call,
                     std::initializer_list<std::string> phrases) {
  try {
    call();
    ADD_FAILURE() << "expected a FileError";
  } catch (const FileError& e) {
    for (const std::string& phrase : phrases) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos)
          << "'" << phrase << "' not in: " << e.what();
    }
  }
}

void ExpectPoseNear(const Rigid3& a, const Rigid3& b, double tolerance) {
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(a.R[k], b.R[k], tolerance) << "R[" << k << "]";
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(a.t[k], b.t[k], tolerance) << "t[" << k << "]";
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// Replaces line `number` (1-based) of a text file.
void ReplaceLine(const fs::path& path, int number, const std::string& text) {
  std::ifstream in(path);
  std::string content, line;
  for (int k = 1; std::getline(in, line); ++k) content += (k == number ? text : line) + "\n";
  in.close();
  WriteText(path, content);
}

std::string MatrixText(const Rigid3& T) {
  std::string text;
  char row[160];
  for (int r = 0; r < 3; ++r) {
    std::snprintf(row, sizeof(row), "%.9f\t%.9f\t%.9f\t%.9f\n", T.R[r * 3], T.R[r * 3 + 1],
                  T.R[r * 3 + 2], T.t[r]);
    text += row;
  }
  return text + "0 0 0 1\n";
}

TEST(SyntheticGroundTruth, MatchesTheSceneWithStridingAndLimit) {
  DatasetOptions options = SmallSynthetic(10);
  options.every = 3;
  options.max_frames = 3;
  std::unique_ptr<GroundTruthSource> source = OpenDataset("synthetic:orbit", options);
  EXPECT_EQ(source->layout(), DatasetLayout::kSynthetic);
  EXPECT_EQ(source->size(), 3);
  EXPECT_EQ(source->name(), "synthetic-orbit-seed3");
  const std::vector<GroundTruthFrame> frames = ReadAll(*source);
  ASSERT_EQ(frames.size(), 3u);
  SyntheticOptions scene_options = options.synthetic;
  scene_options.trajectory = Trajectory::kOrbit;
  const SyntheticScene scene(scene_options);
  for (int k = 0; k < 3; ++k) {
    const SyntheticFrame expected = scene.Render(3 * k);
    EXPECT_EQ(frames[k].frame.index, k);
    EXPECT_EQ(frames[k].frame.image.data, expected.frame.image.data);
    EXPECT_EQ(frames[k].depth, expected.depth);
    ExpectPoseNear(frames[k].world_from_cam, expected.world_from_cam, 0);
    EXPECT_EQ(frames[k].intrinsics.fx, expected.intrinsics.fx);
  }
  EXPECT_THROW(OpenDataset("synthetic:spiral", options), OptionError);
}

TEST(DatasetLayouts, MissingOrUnknownFoldersSayWhatIsExpected) {
  const fs::path dir = testing::ScratchDir("gt_unknown");
  ExpectFileError([&] { OpenDataset((dir / "nope").string()); }, {"does not exist", "nope"});
  ExpectFileError([&] { DetectLayout(dir.string()); }, {"not a dataset sequence", "rgb.txt"});
  ExpectFileError([&] { FindSequences(dir.string()); }, {"none of its sub-folders"});
  WriteText(dir / "rgb.txt", "0 rgb/0.png\n");
  ExpectFileError([&] { DetectLayout(dir.string()); }, {"missing depth.txt, groundtruth.txt"});
  EXPECT_THROW(
      [] {
        DatasetOptions bad;
        bad.every = 0;
        OpenDataset("synthetic", bad);
      }(),
      OptionError);
}

#ifdef STREAMRECON_HAVE_OPENCV

void WriteColour(const fs::path& path, const RgbImage& image) {
  const cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.data.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(path.string(), bgr));
}

// 16-bit depth PNG with depth * scale; pixels in `invalid` get the value invalid_value.
void WriteDepth(const fs::path& path, const GroundTruthFrame& frame, double scale,
                const std::vector<size_t>& invalid = {}, uint16_t invalid_value = 0) {
  cv::Mat raw(frame.frame.image.height, frame.frame.image.width, CV_16UC1);
  for (size_t i = 0; i < frame.depth.size(); ++i) {
    raw.at<uint16_t>(static_cast<int>(i)) =
        static_cast<uint16_t>(std::lround(frame.depth[i] * scale));
  }
  for (size_t i : invalid) raw.at<uint16_t>(static_cast<int>(i)) = invalid_value;
  ASSERT_TRUE(cv::imwrite(path.string(), raw));
}

void ExpectSameFrames(const std::vector<GroundTruthFrame>& read,
                      const std::vector<GroundTruthFrame>& written, double depth_tolerance) {
  ASSERT_EQ(read.size(), written.size());
  for (size_t k = 0; k < read.size(); ++k) {
    SCOPED_TRACE("frame " + std::to_string(k));
    EXPECT_EQ(read[k].frame.index, static_cast<int64_t>(k));
    EXPECT_EQ(read[k].frame.image.width, written[k].frame.image.width);
    EXPECT_EQ(read[k].frame.image.height, written[k].frame.image.height);
    EXPECT_EQ(read[k].frame.image.data, written[k].frame.image.data);
    ASSERT_EQ(read[k].depth.size(), written[k].depth.size());
    double worst = 0;
    for (size_t i = 0; i < read[k].depth.size(); ++i) {
      worst = std::max(worst, std::abs(double(read[k].depth[i]) - written[k].depth[i]));
    }
    EXPECT_LE(worst, depth_tolerance);
    ExpectPoseNear(read[k].world_from_cam, written[k].world_from_cam, 1e-6);
  }
}

TEST(TumDataset, RoundTripKeepsFramesDepthsAndPoses) {
  const fs::path dir = testing::ScratchDir("gt_tum_round_trip") / "seq";
  std::unique_ptr<GroundTruthSource> synthetic = OpenDataset("synthetic", SmallSynthetic(6));
  EXPECT_EQ(WriteTumDataset(dir, *synthetic), 6);
  const std::vector<GroundTruthFrame> written = SyntheticFrames(6);

  EXPECT_EQ(DetectLayout(dir.string()), DatasetLayout::kTum);
  EXPECT_EQ(FindSequences(dir.string()), std::vector<std::string>{dir.string()});
  std::unique_ptr<GroundTruthSource> source = OpenDataset(dir.string());
  EXPECT_EQ(source->size(), 6);
  EXPECT_EQ(source->name(), "seq");
  const std::vector<GroundTruthFrame> read = ReadAll(*source);
  // 16-bit PNG at 5000 units per metre: rounding is at most half a unit.
  ExpectSameFrames(read, written, 0.5 / 5000 + 1e-6);
  for (size_t k = 0; k < read.size(); ++k) {
    EXPECT_EQ(read[k].frame.timestamp, static_cast<double>(k));
    EXPECT_EQ(read[k].frame.name, "rgb/" + std::to_string(k) + ".000000.png");
    EXPECT_EQ(read[k].intrinsics.fx, written[k].intrinsics.fx);
    EXPECT_EQ(read[k].intrinsics.fy, written[k].intrinsics.fy);
    EXPECT_EQ(read[k].intrinsics.cx, written[k].intrinsics.cx);
    EXPECT_EQ(read[k].intrinsics.cy, written[k].intrinsics.cy);
  }
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  }

  // A folder holding sequences finds them.
  EXPECT_EQ(FindSequences(dir.parent_path().string()), std::vector<std::string>{dir.string()});
}

// Opens the TUM folder with options: one note saying a colour image had no depth, and frames at
// these timestamps.
void ExpectOneColourImageWithoutDepth(const fs::path& dir, DatasetOptions options, const std::vector<double>& expected) {
  std::vector<std::string> notes;
  options.on_note = [&](const std::string& note) { notes.push_back(note); };
  std::unique_ptr<GroundTruthSource> source = OpenDataset(dir.string(), options);
  EXPECT_EQ(source->size(), static_cast<int64_t>(expected.size()));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("1 without depth"), std::string::npos) << notes[0];
  std::vector<double> stamps;
  for (const GroundTruthFrame& f : ReadAll(*source)) stamps.push_back(f.frame.timestamp);
  EXPECT_EQ(stamps, expected);
}

TEST(TumDataset, AssociatesByTimestampAndStrides) {
  const fs::path dir = testing::ScratchDir("gt_tum_assoc") / "seq";
  std::unique_ptr<GroundTruthSource> synthetic = OpenDataset("synthetic", SmallSynthetic(6));
  WriteTumDataset(dir, *synthetic);
  // Frame 2 loses its depth (line 5 of depth.txt: two comment lines, then frames 0, 1, 2).
  ReplaceLine(dir / "depth.txt", 5, "# removed");
  DatasetOptions options;
  ExpectOneColourImageWithoutDepth(dir, options, {0, 1, 3, 4, 5});

  std::vector<double> stamps;
  options.every = 2;
  options.max_frames = 2;
  stamps.clear();
  for (const GroundTruthFrame& f : ReadAll(*OpenDataset(dir.string(), options))) {
    stamps.push_back(f.frame.timestamp);
  }
  EXPECT_EQ(stamps, (std::vector<double>{0, 3}));
}

// A colour image between two frames does not borrow the depth image of its neighbour: depth is
// paired one to one, closest first (TUM's associate.py), while the pose is the nearest one.
TEST(TumDataset, DepthIsPairedOneToOne) {
  const fs::path dir = testing::ScratchDir("gt_tum_one_to_one") / "seq";
  std::unique_ptr<GroundTruthSource> synthetic = OpenDataset("synthetic", SmallSynthetic(6));
  WriteTumDataset(dir, *synthetic);
  // Colour frame 2 moves to t = 1.2 s (line 5 of rgb.txt) and its depth image is gone.
  ReplaceLine(dir / "rgb.txt", 5, "1.200000 rgb/2.000000.png");
  ReplaceLine(dir / "depth.txt", 5, "# removed");
  DatasetOptions options;
  options.max_time_difference = 0.3;  // the depth image at 1.0 s is within reach of 1.2 s
  ExpectOneColourImageWithoutDepth(dir, options, {0, 1, 3, 4, 5});
}

TEST(TumDataset, BrokenFoldersNameTheFileAndLine) {
  const fs::path dir = testing::ScratchDir("gt_tum_broken") / "seq";
  std::unique_ptr<GroundTruthSource> synthetic = OpenDataset("synthetic", SmallSynthetic(4));
  WriteTumDataset(dir, *synthetic);

  fs::remove(dir / "depth" / "2.000000.png");
  ExpectFileError([&] { OpenDataset(dir.string()); },
                  {"missing depth for frame 'rgb/2.000000.png'", "depth/2.000000.png",
                   "depth.txt line 5"});

  // With frame 2 past the limit the missing file does not matter.
  DatasetOptions first_two;
  first_two.max_frames = 2;
  EXPECT_EQ(OpenDataset(dir.string(), first_two)->size(), 2);

  ReplaceLine(dir / "groundtruth.txt", 4, "1.000000 0.5 abc 1.6 0 0 0 1");
  ExpectFileError([&] { OpenDataset(dir.string(), first_two); },
                  {"groundtruth.txt line 4", "8 finite numbers", "abc"});
  ReplaceLine(dir / "groundtruth.txt", 4, "1.000000 0.5 0.1 1.6 0 0 0 0");
  ExpectFileError([&] { OpenDataset(dir.string(), first_two); },
                  {"groundtruth.txt line 4", "quaternion"});
  ReplaceLine(dir / "rgb.txt", 3, "0.000000");
  ExpectFileError([&] { OpenDataset(dir.string(), first_two); }, {"rgb.txt line 3"});

  fs::remove(dir / "groundtruth.txt");
  ExpectFileError([&] { OpenDataset(dir.string()); }, {"missing groundtruth.txt"});
}

TEST(TumDataset, CorruptImagesAreFileErrorsAtReadTime) {
  const fs::path dir = testing::ScratchDir("gt_tum_corrupt") / "seq";
  std::unique_ptr<GroundTruthSource> synthetic = OpenDataset("synthetic", SmallSynthetic(3));
  WriteTumDataset(dir, *synthetic);
  WriteText(dir / "depth" / "1.000000.png", "not a png");
  // An 8-bit depth image is refused too.
  cv::imwrite((dir / "depth" / "2.000000.png").string(), cv::Mat(48, 64, CV_8UC1, cv::Scalar(9)));
  std::unique_ptr<GroundTruthSource> source = OpenDataset(dir.string());
  ASSERT_TRUE(source->Next().has_value());
  ExpectFileError([&] { source->Next(); }, {"depth/1.000000.png", "cannot decode"});
  ExpectFileError([&] { source->Next(); }, {"depth/2.000000.png", "16-bit single-channel"});
}

TEST(TumDataset, WriterRefusesBadSequences) {
  const fs::path dir = testing::ScratchDir("gt_tum_writer");
  std::vector<GroundTruthFrame> frames = SyntheticFrames(2);
  TumDatasetWriter writer(dir);
  EXPECT_THROW(writer.Finish(), Error);
  writer.Add(frames[1]);
  EXPECT_THROW(writer.Add(frames[0]), Error);  // timestamp 0 after 1
  frames[1].frame.timestamp = 2;
  frames[1].intrinsics.fx += 1;
  EXPECT_THROW(writer.Add(frames[1]), Error);  // a second camera
  frames[1].intrinsics.fx -= 1;
  frames[1].depth.pop_back();
  EXPECT_THROW(writer.Add(frames[1]), Error);
}

// Writes frames as one 7-Scenes sequence (depth in mm; pixel 0 of each frame invalid, 65535).
void WriteSevenScenes(const fs::path& dir, const std::vector<GroundTruthFrame>& frames) {
  fs::create_directories(dir);
  for (size_t k = 0; k < frames.size(); ++k) {
    char stem[32];
    std::snprintf(stem, sizeof(stem), "frame-%06zu", k);
    WriteColour(dir / (std::string(stem) + ".color.png"), frames[k].frame.image);
    WriteDepth(dir / (std::string(stem) + ".depth.png"), frames[k], 1000, {0}, 65535);
    WriteText(dir / (std::string(stem) + ".pose.txt"), MatrixText(frames[k].world_from_cam));
  }
}

TEST(SevenScenes, ReadsSequencesOfAScene) {
  const fs::path scene = testing::ScratchDir("gt_7scenes") / "chess";
  const std::vector<GroundTruthFrame> frames = SyntheticFrames(4);
  WriteSevenScenes(scene / "seq-02", frames);
  WriteSevenScenes(scene / "seq-10", frames);
  WriteText(scene / "TrainSplit.txt", "sequence2\n");
  EXPECT_EQ(FindSequences(scene.string()),
            (std::vector<std::string>{(scene / "seq-02").string(), (scene / "seq-10").string()}));

  std::unique_ptr<GroundTruthSource> source = OpenDataset((scene / "seq-02").string());
  EXPECT_EQ(source->layout(), DatasetLayout::kSevenScenes);
  EXPECT_EQ(source->name(), "seq-02");
  std::vector<GroundTruthFrame> read = ReadAll(*source);
  ASSERT_EQ(read.size(), 4u);
  for (GroundTruthFrame& f : read) {
    EXPECT_EQ(f.depth[0], 0.0f);  // 65535 = invalid
    EXPECT_EQ(f.intrinsics.fx, 585.0);
    EXPECT_EQ(f.intrinsics.cx, 320.0);
  }
  std::vector<GroundTruthFrame> expected = frames;
  for (size_t k = 0; k < read.size(); ++k) read[k].depth[0] = expected[k].depth[0];
  ExpectSameFrames(read, expected, 0.5e-3 + 1e-6);
  EXPECT_EQ(read[1].frame.name, "frame-000001.color.png");
}

TEST(SevenScenes, BrokenSequencesNameTheFileAndLine) {
  const fs::path dir = testing::ScratchDir("gt_7scenes_broken") / "seq-01";
  WriteSevenScenes(dir, SyntheticFrames(3));
  ReplaceLine(dir / "frame-000002.pose.txt", 2, "0 1 0 nan-ish");
  ExpectFileError([&] { OpenDataset(dir.string()); },
                  {"frame-000002.pose.txt line 2", "4x4 camera-to-world"});
  WriteText(dir / "frame-000002.pose.txt", MatrixText(Rigid3{}));
  ReplaceLine(dir / "frame-000002.pose.txt", 4, "0 0 1 1");
  ExpectFileError([&] { OpenDataset(dir.string()); }, {"frame-000002.pose.txt line 4", "0 0 0 1"});
  fs::remove(dir / "frame-000002.pose.txt");
  ExpectFileError([&] { OpenDataset(dir.string()); }, {"missing pose", "frame-000002.pose.txt"});
  fs::remove(dir / "frame-000001.depth.png");
  ExpectFileError([&] { OpenDataset(dir.string()); },
                  {"missing depth for frame 'frame-000001.color.png'", "frame-000001.depth.png"});
}

// Neural-RGBD style: images/imgK.png, depth/depthK.png (mm), poses.txt in OpenGL axes, focal.txt.
void WriteNeuralRgbd(const fs::path& dir, const std::vector<GroundTruthFrame>& frames) {
  fs::create_directories(dir / "images");
  fs::create_directories(dir / "depth");
  std::string poses;
  for (size_t k = 0; k < frames.size(); ++k) {
    WriteColour(dir / "images" / ("img" + std::to_string(k) + ".png"), frames[k].frame.image);
    WriteDepth(dir / "depth" / ("depth" + std::to_string(k) + ".png"), frames[k], 1000);
    Rigid3 gl = frames[k].world_from_cam;
    for (int r = 0; r < 3; ++r) {
      gl.R[r * 3 + 1] = -gl.R[r * 3 + 1];
      gl.R[r * 3 + 2] = -gl.R[r * 3 + 2];
    }
    poses += MatrixText(gl);
  }
  WriteText(dir / "poses.txt", poses);
  char focal[64];
  std::snprintf(focal, sizeof(focal), "%.17g\n", frames[0].intrinsics.fx);
  WriteText(dir / "focal.txt", focal);
}

TEST(RgbdFolder, ReadsNeuralRgbdLayoutWithOpenGlPoses) {
  const fs::path dir = testing::ScratchDir("gt_nrgbd") / "breakfast_room";
  const std::vector<GroundTruthFrame> frames = SyntheticFrames(12);
  WriteNeuralRgbd(dir, frames);
  EXPECT_EQ(DetectLayout(dir.string()), DatasetLayout::kRgbdFolder);
  std::unique_ptr<GroundTruthSource> source = OpenDataset(dir.string());
  EXPECT_EQ(source->size(), 12);
  const std::vector<GroundTruthFrame> read = ReadAll(*source);
  ExpectSameFrames(read, frames, 0.5e-3 + 1e-6);  // natural order: img2 before img10
  EXPECT_EQ(read[10].frame.name, "images/img10.png");
  EXPECT_EQ(read[0].intrinsics.fx, frames[0].intrinsics.fx);
  EXPECT_EQ(read[0].intrinsics.cx, 32.0);
  EXPECT_EQ(read[0].intrinsics.cy, 24.0);
}

TEST(RgbdFolder, ReadsScanNetLayoutDroppingInvalidPoses) {
  const fs::path dir = testing::ScratchDir("gt_scannet") / "scene0000_00";
  const std::vector<GroundTruthFrame> frames = SyntheticFrames(4);
  for (const char* sub : {"color", "depth", "pose", "intrinsic"}) fs::create_directories(dir / sub);
  for (size_t k = 0; k < frames.size(); ++k) {
    WriteColour(dir / "color" / (std::to_string(k) + ".png"), frames[k].frame.image);
    WriteDepth(dir / "depth" / (std::to_string(k) + ".png"), frames[k], 1000);
    WriteText(dir / "pose" / (std::to_string(k) + ".txt"),
              k == 1 ? "-inf -inf -inf -inf\n-inf -inf -inf -inf\n-inf -inf -inf -inf\n"
                       "-inf -inf -inf -inf\n"
                     : MatrixText(frames[k].world_from_cam));
  }
  const Intrinsics& k = frames[0].intrinsics;
  WriteText(dir / "intrinsic" / "intrinsic_color.txt",
            std::to_string(k.fx) + " 0 " + std::to_string(k.cx) + " 0\n0 " + std::to_string(k.fy) +
                " " + std::to_string(k.cy) + " 0\n0 0 1 0\n0 0 0 1\n");
  std::vector<std::string> notes;
  DatasetOptions options;
  options.on_note = [&](const std::string& note) { notes.push_back(note); };
  std::unique_ptr<GroundTruthSource> source = OpenDataset(dir.string(), options);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("dropped 1 of 4"), std::string::npos) << notes[0];
  const std::vector<GroundTruthFrame> read = ReadAll(*source);
  ExpectSameFrames(read, {frames[0], frames[2], frames[3]}, 0.5e-3 + 1e-6);
  EXPECT_NEAR(read[0].intrinsics.fx, k.fx, 1e-5);
  EXPECT_EQ(read[1].frame.name, "color/2.png");
}

TEST(RgbdFolder, BrokenFoldersNameTheFileAndLine) {
  const fs::path dir = testing::ScratchDir("gt_nrgbd_broken") / "scene";
  WriteNeuralRgbd(dir, SyntheticFrames(3));
  ReplaceLine(dir / "poses.txt", 6, "0 1 0 x");
  ExpectFileError([&] { OpenDataset(dir.string()); }, {"poses.txt line 6", "4 numbers"});
  ReplaceLine(dir / "poses.txt", 12, "");
  ExpectFileError([&] { OpenDataset(dir.string()); }, {"poses.txt", "12 lines, found 11"});
  WriteNeuralRgbd(dir, SyntheticFrames(3));
  fs::remove(dir / "depth" / "depth1.png");
  ExpectFileError([&] { OpenDataset(dir.string()); },
                  {"missing depth for frame 'images/img1.png'", "numbered 1"});
  fs::remove(dir / "poses.txt");
  ExpectFileError([&] { DetectLayout(dir.string()); }, {"no poses", "poses.txt"});
  fs::remove(dir / "focal.txt");
  WriteText(dir / "poses.txt", "");
  ExpectFileError([&] { OpenDataset(dir.string()); }, {"expected intrinsics"});
}

#else

TEST(TumDataset, WithoutOpenCvFoldersThrowAClearError) {
  const fs::path dir = testing::ScratchDir("gt_no_opencv");
  for (const char* f : {"rgb.txt", "depth.txt", "groundtruth.txt"}) WriteText(dir / f, "");
  EXPECT_THROW(TumDatasetWriter(dir / "out"), Error);
}

#endif

}  // namespace
}  // namespace streamrecon::datasets
