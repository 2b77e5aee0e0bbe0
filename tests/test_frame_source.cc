// Tests of frame sources (folders, globs, single files, videos), their errors, and the
// preprocessing that sizes frames for the model.
#include "datasets/frame_source.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/errors.h"
#include "datasets/preprocess.h"
#include "tests/test_util.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#endif

// Skips a test that decodes images or videos in a build without OpenCV.
#define REQUIRE_OPENCV()                                                  \
  do {                                                                    \
    if (!::streamrecon::datasets::HaveOpenCv()) {                         \
      GTEST_SKIP() << "this build has no OpenCV, so it cannot decode";    \
    }                                                                     \
  } while (0)

namespace streamrecon::datasets {
namespace {

namespace fs = std::filesystem;
using streamrecon::testing::SamplesDir;
using streamrecon::testing::ScratchDir;

fs::path BuildingDir() { return SamplesDir() / "building"; }

// Reads a source to its end (at most 1000 frames, so a bug cannot hang the test).
std::vector<Frame> ReadAll(FrameSource& source) {
  std::vector<Frame> frames;
  while (frames.size() < 1000) {
    std::optional<Frame> frame = source.Next();
    if (!frame) break;
    frames.push_back(std::move(*frame));
  }
  return frames;
}

std::vector<std::string> Names(const std::vector<Frame>& frames) {
  std::vector<std::string> names;
  for (const Frame& frame : frames) names.push_back(frame.name);
  return names;
}

// The message of the ErrorType that call throws ("" and a failure when it throws nothing).
template <typename ErrorType, typename Call>
std::string MessageOf(Call call) {
  try {
    call();
  } catch (const ErrorType& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(FrameSource, SampleFolderGivesSixFramesInOrder) {
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  REQUIRE_OPENCV();
  const std::unique_ptr<FrameSource> source = OpenFrameSource(BuildingDir().string());
  EXPECT_EQ(source->SizeHint(), 6);
  EXPECT_NE(source->Describe().find("building"), std::string::npos) << source->Describe();
  const std::vector<Frame> frames = ReadAll(*source);
  ASSERT_EQ(Names(frames),
            (std::vector<std::string>{"0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"}));
  for (size_t k = 0; k < frames.size(); ++k) {
    EXPECT_EQ(frames[k].index, static_cast<int64_t>(k));
    EXPECT_EQ(frames[k].image.width, 512);
    EXPECT_EQ(frames[k].image.height, 384);
    EXPECT_EQ(frames[k].image.data.size(), 512u * 384u * 3u);
  }
  EXPECT_FALSE(source->Next().has_value());
}

TEST(FrameSource, NaturalOrderAnyCaseExtensionsAndNonImagesIgnored) {
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  REQUIRE_OPENCV();
  const fs::path dir = ScratchDir("natural_order");
  fs::copy_file(BuildingDir() / "0.jpg", dir / "frame_10.jpg");
  fs::copy_file(BuildingDir() / "1.jpg", dir / "frame_2.JPG");
  fs::copy_file(BuildingDir() / "2.jpg", dir / "frame_1.jpeg");
  WriteBytes(dir / "notes.txt", "not an image");
  WriteBytes(dir / ".hidden.jpg", "hidden files are skipped");
  const std::unique_ptr<FrameSource> source = OpenFrameSource(dir.string());
  EXPECT_EQ(Names(ReadAll(*source)),
            (std::vector<std::string>{"frame_1.jpeg", "frame_2.JPG", "frame_10.jpg"}));
}

TEST(FrameSource, EveryAndMaxFramesSelectFrames) {
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  REQUIRE_OPENCV();
  SourceOptions options;
  options.every = 2;
  std::unique_ptr<FrameSource> source = OpenFrameSource(BuildingDir().string(), options);
  EXPECT_EQ(source->SizeHint(), 3);
  std::vector<Frame> frames = ReadAll(*source);
  ASSERT_EQ(Names(frames), (std::vector<std::string>{"0.jpg", "2.jpg", "4.jpg"}));
  EXPECT_EQ(frames[2].index, 2);
  EXPECT_EQ(frames[2].timestamp, 4.0);

  options.max_frames = 2;
  source = OpenFrameSource(BuildingDir().string(), options);
  EXPECT_EQ(source->SizeHint(), 2);
  EXPECT_EQ(Names(ReadAll(*source)), (std::vector<std::string>{"0.jpg", "2.jpg"}));

  options.every = 1;
  options.max_frames = 4;
  source = OpenFrameSource(BuildingDir().string(), options);
  EXPECT_EQ(ReadAll(*source).size(), 4u);
}

TEST(FrameSource, GlobPatternAndSingleImage) {
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  REQUIRE_OPENCV();
  std::unique_ptr<FrameSource> source = OpenFrameSource((BuildingDir() / "*.jpg").string());
  EXPECT_EQ(Names(ReadAll(*source)),
            (std::vector<std::string>{"0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"}));
  source = OpenFrameSource((BuildingDir() / "3.jpg").string());
  EXPECT_EQ(Names(ReadAll(*source)), (std::vector<std::string>{"3.jpg"}));
}

TEST(FrameSource, MissingPathEmptyFolderAndEmptyGlobAreNamed) {
  const std::string missing = "/nonexistent/streamrecon/frames";
  EXPECT_NE(MessageOf<FileError>([&] { OpenFrameSource(missing); }).find(missing),
            std::string::npos);

  const fs::path empty = ScratchDir("empty_folder");
  WriteBytes(empty / "readme.txt", "no images here");
  const std::string message = MessageOf<FileError>([&] { OpenFrameSource(empty.string()); });
  EXPECT_NE(message.find(empty.string()), std::string::npos) << message;
  EXPECT_NE(message.find(".jpg"), std::string::npos) << message;
  EXPECT_NE(message.find(".png"), std::string::npos) << message;

  const std::string pattern = (empty / "*.png").string();
  EXPECT_NE(MessageOf<FileError>([&] { OpenFrameSource(pattern); }).find(pattern),
            std::string::npos);
}

TEST(FrameSource, CorruptImageNamesFileAndFrame) {
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  REQUIRE_OPENCV();
  const fs::path dir = ScratchDir("corrupt_image");
  fs::copy_file(BuildingDir() / "0.jpg", dir / "0.jpg");
  WriteBytes(dir / "1.jpg", std::string(4096, '\x5a'));
  SourceOptions strict;
  strict.strict = true;
  const std::unique_ptr<FrameSource> source = OpenFrameSource(dir.string(), strict);
  ASSERT_TRUE(source->Next().has_value());
  const std::string message = MessageOf<FileError>([&] { source->Next(); });
  EXPECT_NE(message.find((dir / "1.jpg").string()), std::string::npos) << message;
  EXPECT_NE(message.find("frame 1"), std::string::npos) << message;
  EXPECT_NE(message.find("--strict"), std::string::npos) << message;
}

// Without --strict, damaged images are skipped with a message naming each and counted: a file of
// garbage, and a JPEG cut in half (which OpenCV would decode half-grey without an error). Frames
// of another size are reported once; an image under the minimum size is an error.
TEST(FrameSource, DamagedImagesAreSkippedNamedAndCounted) {
  REQUIRE_OPENCV();
  const fs::path dir = ScratchDir("damaged_images");
  cv::Mat image(48, 64, CV_8UC3);
  cv::randu(image, 0, 255);
  cv::imwrite((dir / "0.png").string(), image);
  cv::imwrite((dir / "1.jpg").string(), image);
  const auto jpeg_size = fs::file_size(dir / "1.jpg");
  fs::resize_file(dir / "1.jpg", jpeg_size / 2);
  WriteBytes(dir / "2.png", std::string(3000, '\x11'));
  cv::Mat other(60, 80, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::imwrite((dir / "3.png").string(), other);
  cv::imwrite((dir / "4.png").string(), image);
  std::vector<std::string> skips, notes;
  SourceOptions options;
  options.on_skip = [&](const std::string& m) { skips.push_back(m); };
  options.on_note = [&](const std::string& m) { notes.push_back(m); };
  const std::unique_ptr<FrameSource> source = OpenFrameSource(dir.string(), options);
  const std::vector<Frame> frames = ReadAll(*source);
  EXPECT_EQ(Names(frames), (std::vector<std::string>{"0.png", "3.png", "4.png"}));
  EXPECT_EQ(source->skipped(), 2);
  ASSERT_EQ(skips.size(), 2u);
  EXPECT_NE(skips[0].find("1.jpg"), std::string::npos) << skips[0];
  EXPECT_NE(skips[0].find("cut short"), std::string::npos) << skips[0];
  EXPECT_NE(skips[1].find("2.png"), std::string::npos) << skips[1];
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("3.png"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("80x60"), std::string::npos) << notes[0];
  const fs::path tiny = ScratchDir("tiny_image");
  cv::imwrite((tiny / "0.png").string(), cv::Mat(1, 1, CV_8UC3, cv::Scalar(9, 9, 9)));
  const std::unique_ptr<FrameSource> small = OpenFrameSource(tiny.string());
  const std::string message = MessageOf<FileError>([&] { small->Next(); });
  EXPECT_NE(message.find("1x1, smaller than the model's minimum"), std::string::npos) << message;
}

// A video cut mid-data says how many of its announced frames were read.
TEST(FrameSource, VideoCutShortSaysHowMuchWasRead) {
  REQUIRE_OPENCV();
  const fs::path path = ScratchDir("video_cut") / "clip.avi";
  {
    cv::VideoWriter writer(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10.0, cv::Size(64, 48));
    if (!writer.isOpened()) GTEST_SKIP() << "this OpenCV cannot write MJPG .avi";
    cv::Mat frame(48, 64, CV_8UC3);
    for (int k = 0; k < 18; ++k) {
      cv::randu(frame, 0, 255);
      writer.write(frame);
    }
  }
  fs::resize_file(path, fs::file_size(path) * 2 / 5);
  std::vector<std::string> skips;
  SourceOptions options;
  options.on_skip = [&](const std::string& m) { skips.push_back(m); };
  std::unique_ptr<FrameSource> source;
  try {
    source = OpenFrameSource(path.string(), options);
  } catch (const FileError& e) {
    GTEST_SKIP() << "this OpenCV refuses the cut file outright: " << e.what();
  }
  const std::vector<Frame> frames = ReadAll(*source);
  ASSERT_LT(frames.size(), 18u);
  ASSERT_EQ(skips.size(), 1u);
  EXPECT_NE(skips[0].find("ended after " + std::to_string(frames.size()) + " of the 18 frames"), std::string::npos) << skips[0];
}

TEST(FrameSource, FileThatIsNeitherImageNorVideoIsNamed) {
  REQUIRE_OPENCV();
  const fs::path file = ScratchDir("not_a_video") / "garbage.dat";
  WriteBytes(file, std::string(4096, '\x17'));
  EXPECT_NE(MessageOf<FileError>([&] { OpenFrameSource(file.string()); }).find("garbage.dat"),
            std::string::npos);
}

TEST(FrameSource, BadOptionsAndCameraSpecsAreRejected) {
  SourceOptions options;
  options.every = 0;
  EXPECT_THROW(options.Check(), OptionError);
  EXPECT_THROW(OpenFrameSource("camera:0", options), OptionError);
  options = SourceOptions{};
  options.max_frames = -2;
  EXPECT_THROW(options.Check(), OptionError);
  EXPECT_NE(MessageOf<OptionError>([] { OpenFrameSource("camera:front"); }).find("camera:front"),
            std::string::npos);
}

TEST(FrameSource, WithoutOpenCvTheErrorSaysSo) {
  if (HaveOpenCv()) GTEST_SKIP() << "this build has OpenCV";
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  EXPECT_NE(MessageOf<Error>([] { OpenFrameSource(BuildingDir().string()); }).find("OpenCV"),
            std::string::npos);
}

#ifdef STREAMRECON_HAVE_OPENCV

TEST(FrameSource, GreyAnd16BitImagesBecome8BitRgbWithOneNoteEach) {
  const fs::path dir = ScratchDir("grey_png");
  ASSERT_TRUE(cv::imwrite((dir / "a.png").string(), cv::Mat(24, 32, CV_8UC1, cv::Scalar(77))));
  ASSERT_TRUE(cv::imwrite((dir / "b.png").string(), cv::Mat(24, 32, CV_8UC1, cv::Scalar(78))));
  ASSERT_TRUE(cv::imwrite((dir / "c.png").string(),
                          cv::Mat(24, 32, CV_16UC3, cv::Scalar(10 * 257, 20 * 257, 30 * 257))));
  std::vector<std::string> notes;
  SourceOptions options;
  options.on_note = [&](const std::string& note) { notes.push_back(note); };
  const std::unique_ptr<FrameSource> source = OpenFrameSource(dir.string(), options);
  const std::vector<Frame> frames = ReadAll(*source);
  ASSERT_EQ(frames.size(), 3u);
  const uint8_t* grey = frames[0].image.pixel(5, 5);
  EXPECT_EQ(std::vector<int>(grey, grey + 3), (std::vector<int>{77, 77, 77}));
  const uint8_t* deep = frames[2].image.pixel(5, 5);  // BGR (10, 20, 30) on disk -> RGB
  EXPECT_EQ(std::vector<int>(deep, deep + 3), (std::vector<int>{30, 20, 10}));
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[0].find("grey"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("a.png"), std::string::npos) << notes[0];
  EXPECT_NE(notes[1].find("16-bit"), std::string::npos) << notes[1];
}

TEST(FrameSource, VideoWrittenWithMjpgReadsBack) {
  const fs::path path = ScratchDir("video") / "clip.avi";
  {
    cv::VideoWriter writer(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10.0,
                           cv::Size(64, 48));
    if (!writer.isOpened()) GTEST_SKIP() << "this OpenCV cannot write MJPG .avi";
    for (int k = 0; k < 10; ++k) {
      writer.write(cv::Mat(48, 64, CV_8UC3, cv::Scalar(200 - 10 * k, 100, 20 * k)));  // BGR
    }
  }
  std::unique_ptr<FrameSource> source = OpenFrameSource(path.string());
  EXPECT_EQ(source->SizeHint(), 10);
  const std::vector<Frame> frames = ReadAll(*source);
  ASSERT_EQ(frames.size(), 10u);
  for (int k = 0; k < 10; ++k) {
    EXPECT_EQ(frames[k].name, "video:" + std::to_string(k));
    EXPECT_DOUBLE_EQ(frames[k].timestamp, k / 10.0);
    ASSERT_EQ(frames[k].image.width, 64);
    ASSERT_EQ(frames[k].image.height, 48);
    const uint8_t* rgb = frames[k].image.pixel(32, 24);
    EXPECT_NEAR(rgb[0], 20 * k, 8) << "frame " << k;
    EXPECT_NEAR(rgb[1], 100, 8) << "frame " << k;
    EXPECT_NEAR(rgb[2], 200 - 10 * k, 8) << "frame " << k;
  }
  SourceOptions options;
  options.every = 3;
  source = OpenFrameSource(path.string(), options);
  EXPECT_EQ(source->SizeHint(), 4);
  EXPECT_EQ(Names(ReadAll(*source)),
            (std::vector<std::string>{"video:0", "video:3", "video:6", "video:9"}));
}

#endif  // STREAMRECON_HAVE_OPENCV

TEST(Preprocess, ModelInputSizes) {
  const PreprocessOptions options;
  EXPECT_EQ(ModelInputSize(640, 480, options), (std::pair<int, int>{518, 392}));
  EXPECT_EQ(ModelInputSize(512, 384, options), (std::pair<int, int>{518, 392}));
  EXPECT_EQ(ModelInputSize(1920, 1080, options), (std::pair<int, int>{518, 294}));
  EXPECT_EQ(ModelInputSize(5000, 10, options), (std::pair<int, int>{518, 14}));
  PreprocessOptions fixed;
  fixed.target_height = 280;
  EXPECT_EQ(ModelInputSize(640, 480, fixed), (std::pair<int, int>{518, 280}));
  EXPECT_THROW(ModelInputSize(0, 480, options), Error);
  PreprocessOptions bad;
  bad.target_width = 500;
  EXPECT_THROW(bad.Check(), OptionError);
  bad = PreprocessOptions{};
  bad.target_height = 100;
  EXPECT_THROW(ModelInputSize(640, 480, bad), OptionError);
}

TEST(Preprocess, ResizeTo518x392AndChwFloat) {
  RgbImage image;
  image.width = 640;
  image.height = 480;
  image.data.resize(640 * 480 * 3);
  for (size_t i = 0; i < image.data.size(); i += 3) {
    image.data[i] = 40;
    image.data[i + 1] = 128;
    image.data[i + 2] = 250;
  }
  const RgbImage resized = ResizeForModel(image, PreprocessOptions{});
  ASSERT_EQ(resized.width, 518);
  ASSERT_EQ(resized.height, 392);
  ASSERT_EQ(resized.data.size(), 518u * 392u * 3u);
  for (size_t i = 0; i < resized.data.size(); i += 3) {  // a constant image stays constant
    ASSERT_EQ(resized.data[i], 40);
    ASSERT_EQ(resized.data[i + 1], 128);
    ASSERT_EQ(resized.data[i + 2], 250);
  }
  const std::vector<float> chw = ToChwFloat(resized);
  const size_t plane = 518 * 392;
  ASSERT_EQ(chw.size(), 3 * plane);
  EXPECT_FLOAT_EQ(chw[0 * plane + 1000], 40 / 255.0f);
  EXPECT_FLOAT_EQ(chw[1 * plane + 1000], 128 / 255.0f);
  EXPECT_FLOAT_EQ(chw[2 * plane + 1000], 250 / 255.0f);

  image.data.pop_back();
  EXPECT_THROW(ResizeForModel(image, PreprocessOptions{}), Error);
}

TEST(Preprocess, SamplePhotoKeepsItsContent) {
  STREAMRECON_REQUIRE_SHARED(BuildingDir());
  REQUIRE_OPENCV();
  const std::optional<Frame> frame = OpenFrameSource((BuildingDir() / "0.jpg").string())->Next();
  ASSERT_TRUE(frame.has_value());
  const RgbImage resized = ResizeForModel(frame->image, PreprocessOptions{});
  ASSERT_EQ(resized.width, 518);
  ASSERT_EQ(resized.height, 392);
  double mean_in = 0, mean_out = 0;
  for (uint8_t value : frame->image.data) mean_in += value;
  for (uint8_t value : resized.data) mean_out += value;
  EXPECT_NEAR(mean_in / frame->image.data.size(), mean_out / resized.data.size(), 2.0);
}

}  // namespace
}  // namespace streamrecon::datasets
