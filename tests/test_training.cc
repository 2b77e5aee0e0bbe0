// Training: the batched block-causal forward equals streaming, gradients reach every parameter,
// the losses and data behave, a fixed batch is overfitted, and a resumed run repeats its steps.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/training_data.h"
#include "models/streaming_model.h"
#include "models/training.h"
#include "tests/test_util.h"

namespace streamrecon::models {
namespace {

using streamrecon::testing::ParityDir;
using streamrecon::testing::ScratchDir;

double RelativeL2(const at::Tensor& ours, const at::Tensor& ref) {
  const at::Tensor a = ours.to(at::kDouble).reshape({-1}), b = ref.to(at::kDouble).reshape({-1});
  return (a - b).norm().item<double>() / std::max(1e-300, b.norm().item<double>());
}

// Streams each sequence of images [B, S, 3, H, W] frame by frame (full cache) and compares every
// output of every frame with ForwardSequence on the whole batch. Returns the worst relative error.
double WorstSequenceVsStreaming(StreamingModel& model, const at::Tensor& images) {
  const SequenceOutput batched = model.ForwardSequence(images);
  double worst = 0;
  for (int64_t b = 0; b < images.size(0); ++b) {
    model.Reset();
    for (int64_t s = 0; s < images.size(1); ++s) {
      const StepOutput step = model.Step(images[b][s]);
      const std::pair<at::Tensor, at::Tensor> pairs[] = {{step.pose_enc, batched.pose_enc[b][s]},
                                                         {step.depth, batched.depth[b][s]},
                                                         {step.depth_conf, batched.depth_conf[b][s]},
                                                         {step.world_points, batched.world_points[b][s]},
                                                         {step.world_points_conf, batched.world_points_conf[b][s]}};
      for (const auto& [streamed, seq] : pairs) {
        EXPECT_EQ(streamed.sizes(), seq.sizes());
        worst = std::max(worst, RelativeL2(seq, streamed));
      }
    }
  }
  return worst;
}

TEST(Training, BatchedCausalForwardEqualsStreamingOnTheParityFixture) {
  STREAMRECON_REQUIRE_SHARED(ParityDir() / "weights.safetensors");
  ModelOptions options;
  options.dtype = "float64";
  StreamingModel model(NamedConfig("parity-tiny"), LoadStateDict(ParityDir() / "weights.safetensors"), options);
  const SafetensorsFile ref = ReadSafetensors(ParityDir() / "stream_full.safetensors");
  std::vector<at::Tensor> frames;
  for (int i = 0; ref.tensors.count("frame" + std::to_string(i) + ".image"); ++i) frames.push_back(ref.tensors.at("frame" + std::to_string(i) + ".image"));
  ASSERT_EQ(frames.size(), 6u);
  // Two sequences in one batch: the fixture's order and the reverse (batching must not mix them).
  std::vector<at::Tensor> reversed(frames.rbegin(), frames.rend());
  const at::Tensor images = at::stack({at::stack(frames), at::stack(reversed)}).to(at::kDouble);
  const double worst = WorstSequenceVsStreaming(model, images);
  EXPECT_LE(worst, 1e-5);
  RecordProperty("worst_relative_l2", std::to_string(worst));
  std::printf("batched causal vs streaming, worst relative L2 over 2 x 6 frames x 5 outputs: %.3g\n", worst);
  // And against the reference's own outputs, frame by frame (the first sequence).
  const SequenceOutput out = model.ForwardSequence(images);
  for (int i = 0; i < 6; ++i) {
    const std::string f = "frame" + std::to_string(i) + ".";
    EXPECT_LE(RelativeL2(out.pose_enc[0][i], ref.tensors.at(f + "pose_enc")), 1e-5) << f;
    EXPECT_LE(RelativeL2(out.depth[0][i], ref.tensors.at(f + "depth")), 1e-5) << f;
    EXPECT_LE(RelativeL2(out.world_points[0][i], ref.tensors.at(f + "world_points")), 1e-5) << f;
    EXPECT_LE(RelativeL2(out.world_points_conf[0][i], ref.tensors.at(f + "world_points_conf")), 1e-5) << f;
  }
}

TEST(Training, BatchedCausalForwardEqualsStreamingWithRandomWeights) {
  // Runs without ../shared: another config (deeper, other taps), another frame size.
  ModelOptions options;
  options.dtype = "float64";
  const ModelConfig config = NamedConfig("demo-small");
  StreamingModel model(config, RandomWeights(config, 3), options);
  const at::Tensor images = at::rand({2, 3, 3, 42, 56}, at::TensorOptions().dtype(at::kDouble));
  const double worst = WorstSequenceVsStreaming(model, images);
  EXPECT_LE(worst, 1e-9);
  std::printf("batched causal vs streaming (demo-small, random weights): %.3g\n", worst);
}

ModelConfig TinyConfig() {
  ModelConfig c = NamedConfig("parity-tiny");
  c.img_size = 56;
  return c;
}

// A small training batch at 56x42: `frames_per_batch` frames in sequences of `frames` frames.
datasets::TrainingDataOptions SmallBatches(int frames_per_batch, int frames) {
  datasets::TrainingDataOptions data;
  data.sizes = {{56, 42}};
  data.frames_per_batch = frames_per_batch;
  data.min_frames = data.start_max_frames = data.max_frames = frames;
  return data;
}

TEST(Training, GradientsReachEveryParameter) {
  ModelOptions options;
  options.trainable = true;
  const ModelConfig config = TinyConfig();
  StreamingModel model(config, RandomWeights(config, 1), options);
  SequenceBatch batch = datasets::MakeTrainingBatch(SmallBatches(4, 2), 0);
  NormaliseScale(batch);
  const LossTerms loss = SequenceLoss(model.ForwardSequence(batch.images), batch, LossOptions{});
  ASSERT_TRUE(std::isfinite(loss.total.item<double>()));
  loss.total.backward();
  int tensors = 0;
  for (const auto& [name, t] : model.Parameters()) {
    if (IsIgnoredParameter(name)) continue;
    ++tensors;
    ASSERT_TRUE(t.grad().defined()) << name << " got no gradient";
    EXPECT_TRUE(at::isfinite(t.grad()).all().item<bool>()) << name;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << name << " has an all-zero gradient";
  }
  EXPECT_EQ(tensors, static_cast<int>(ExpectedParameters(config).size()));
}

TEST(TrainingData, BatchesAreDeterministicHeldOutAndSelfConsistent) {
  datasets::TrainingDataOptions data = SmallBatches(6, 3);
  data.outdoor_fraction = 0.5;
  const SequenceBatch a = datasets::MakeTrainingBatch(data, 7), again = datasets::MakeTrainingBatch(data, 7);
  EXPECT_TRUE(at::equal(a.images, again.images));
  EXPECT_TRUE(at::equal(a.pose_enc, again.pose_enc));
  EXPECT_FALSE(at::equal(a.images, datasets::MakeTrainingBatch(data, 8).images));
  for (uint64_t seed : a.scene_seeds) EXPECT_GE(seed, datasets::kFirstTrainingSeed);
  datasets::TrainingDataOptions eval = data;
  eval.evaluation = true;
  for (int step = 0; step < 3; ++step)
    for (uint64_t seed : datasets::MakeTrainingBatch(eval, step).scene_seeds) EXPECT_LT(seed, datasets::kFirstTrainingSeed);
  ASSERT_EQ(a.batch(), 2);
  ASSERT_EQ(a.frames(), 3);
  for (int64_t b = 0; b < a.batch(); ++b) {
    // Frame 0 is the reference camera: identity pose, points = unprojected depth.
    const at::Tensor p0 = a.pose_enc[b][0];
    EXPECT_NEAR(p0.narrow(0, 0, 3).abs().max().item<double>(), 0.0, 1e-6);
    EXPECT_NEAR(p0[6].item<double>(), 1.0, 1e-6);
    EXPECT_LT((a.world_points[b][0].select(-1, 2) - a.depth[b][0]).abs().max().item<double>(), 1e-4);
    // Every frame: moving its points into its own camera with its pose gives its depth as z.
    for (int64_t s = 0; s < a.frames(); ++s) {
      std::array<double, 9> enc{};
      for (int i = 0; i < 9; ++i) enc[i] = a.pose_enc[b][s][i].item<double>();
      const Rigid3 cam_from_first = geometry::PoseEncodingToExtrinsics(enc);
      const at::Tensor R = at::tensor(std::vector<double>(cam_from_first.R.begin(), cam_from_first.R.end())).view({3, 3});
      const at::Tensor t = at::tensor(std::vector<double>(cam_from_first.t.begin(), cam_from_first.t.end()));
      const at::Tensor pts = a.world_points[b][s].to(at::kDouble).reshape({-1, 3});
      const at::Tensor z = (at::matmul(pts, R.t()) + t).select(1, 2);
      const at::Tensor d = a.depth[b][s].to(at::kDouble).reshape({-1});
      EXPECT_LT(((z - d).abs() / d).max().item<double>(), 1e-4) << "sequence " << b << " frame " << s;
      // Field of view from the renderer's intrinsics: fx = fy, so tan(fov_h/2)/tan(fov_w/2) = H/W.
      EXPECT_NEAR(std::tan(enc[7] / 2) / std::tan(enc[8] / 2), 42.0 / 56.0, 1e-5);
    }
  }
}

TEST(Training, ScaleNormalisationAndSchedule) {
  SequenceBatch b = datasets::MakeTrainingBatch(SmallBatches(4, 2), 1);
  const at::Tensor raw_points = b.world_points.clone(), raw_t = b.pose_enc.narrow(-1, 0, 3).clone();
  const at::Tensor scale = NormaliseScale(b);
  for (int64_t i = 0; i < b.batch(); ++i) {
    EXPECT_NEAR(b.world_points[i].norm(2, -1).masked_select(b.valid[i]).mean().item<double>(), 1.0, 1e-4);
    EXPECT_LT((b.pose_enc[i].narrow(-1, 0, 3) * scale[i] - raw_t[i]).abs().max().item<double>(), 1e-5);
  }
  EXPECT_NEAR(ScheduledLearningRate(0, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(9, 100, 10, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(10, 100, 10, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(55, 100, 10, 1.0, 0.1), 0.55, 1e-12);  // half way down the cosine
  EXPECT_NEAR(ScheduledLearningRate(100, 100, 10, 1.0, 0.1), 0.1, 1e-12);
}

// The camera centres -R^T t (what ATE measures) from pose encodings, and the centre and step parts
// of the camera term: zero for a perfect prediction, growing with a shrinking path (scale drift),
// with a gradient that reaches the pose encoding.
TEST(Training, CentreAndStepTermsMeasureTheCameraPath) {
  // A quarter turn about z (quaternion x, y, z, w, given unnormalised) and t = (1, 2, 3):
  // R^T t = (2, -1, 3), so the centre is (-2, 1, -3).
  const double h = std::sqrt(0.5);
  const at::Tensor enc = at::tensor({1.0, 2.0, 3.0, 0.0, 0.0, 2 * h, 2 * h, 1.0, 1.0}, at::kDouble).view({1, 1, 9});
  const at::Tensor c = CameraCentres(enc);
  ASSERT_EQ(c.sizes(), (at::IntArrayRef{1, 1, 3}));
  EXPECT_LT((c.view({3}) - at::tensor({-2.0, 1.0, -3.0}, at::kDouble)).abs().max().item<double>(), 1e-12);

  SequenceBatch gt = datasets::MakeTrainingBatch(SmallBatches(8, 4), 3);
  NormaliseScale(gt);
  gt.pose_enc = gt.pose_enc.to(at::kDouble);
  SequenceOutput pred;
  pred.depth = gt.depth.unsqueeze(-1);
  pred.depth_conf = at::ones_like(gt.depth);
  pred.world_points = gt.world_points;
  pred.world_points_conf = at::ones_like(gt.depth);
  auto camera_term = [&](const at::Tensor& pose, double centre, double step) {
    pred.pose_enc = pose;
    pred.pose_iterations = {pose};
    LossOptions o;
    o.centre_weight = centre;
    o.step_weight = step;
    return SequenceLoss(pred, gt, o);
  };
  EXPECT_LT(camera_term(gt.pose_enc, 1.0, 1.0).camera, 1e-6);  // (the loss runs in the batch's float32)
  // The later half of each path shrunk to half its steps: the centres drift towards the start.
  at::Tensor drifted = gt.pose_enc.clone();
  drifted.narrow(1, 2, 2).narrow(-1, 0, 3).mul_(0.5);
  const double plain = camera_term(drifted, 0.0, 0.0).camera;
  const double with_centres = camera_term(drifted, 1.0, 0.0).camera, with_steps = camera_term(drifted, 0.0, 1.0).camera;
  EXPECT_GT(plain, 0.0);
  EXPECT_GT(with_centres, plain);
  EXPECT_GT(with_steps, plain);
  const at::Tensor pose = drifted.clone().requires_grad_(true);
  camera_term(pose, 1.0, 1.0).total.backward();
  ASSERT_TRUE(pose.grad().defined());
  EXPECT_TRUE(at::isfinite(pose.grad()).all().item<bool>());
  EXPECT_GT(pose.grad().abs().sum().item<double>(), 0.0);
}

std::vector<std::vector<double>> ReadLog(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

TrainOptions TinyTraining(const std::filesystem::path& dir, int64_t steps) {
  TrainOptions t;
  t.run_dir = dir.string();
  t.steps = steps;
  t.lr = 2e-3;
  t.warmup = 5;
  t.checkpoint_every = 1000;
  t.log_every = 1000;
  t.eval_every = 0;
  return t;
}

TEST(Training, OverfitsAFixedBatch) {
  const ModelConfig config = TinyConfig();
  const SequenceBatch fixed = datasets::MakeTrainingBatch(SmallBatches(4, 2), 0);
  const auto dir = ScratchDir("train_overfit");
  const TrainResult r = Train(config, RandomWeights(config, 2), TinyTraining(dir, 120), [&](int64_t) { return fixed; });
  ASSERT_TRUE(r.finished);
  const auto rows = ReadLog(dir / "log.csv");
  ASSERT_EQ(rows.size(), 120u);
  // Columns: step,lr,loss,camera,depth,points,depth_l1,points_l2,pose_l1,...
  auto tail_mean = [&](int col) {
    double s = 0;
    for (size_t i = rows.size() - 10; i < rows.size(); ++i) s += rows[i][col];
    return s / 10;
  };
  EXPECT_LT(tail_mean(6), rows[0][6] / 4) << "depth L1 fell from " << rows[0][6] << " to " << tail_mean(6);
  EXPECT_LT(tail_mean(7), rows[0][7] / 4) << "point error fell from " << rows[0][7] << " to " << tail_mean(7);
  EXPECT_LT(tail_mean(8), rows[0][8] / 3) << "pose error fell from " << rows[0][8] << " to " << tail_mean(8);
  EXPECT_LT(tail_mean(2), rows[0][2] - 1.0);
}

TEST(Training, ResumedRunRepeatsTheSameSteps) {
  const ModelConfig config = TinyConfig();
  datasets::TrainingDataOptions data;
  data.sizes = {{56, 42}};
  data.frames_per_batch = 4;
  data.max_frames = 3;
  data.start_max_frames = 2;
  data.grow_steps = 4;
  const auto batch = [&](int64_t step) { return datasets::MakeTrainingBatch(data, step); };
  const auto straight = ScratchDir("train_straight"), resumed = ScratchDir("train_resumed");
  const TrainResult a = Train(config, RandomWeights(config, 5), TinyTraining(straight, 6), batch);
  TrainOptions first = TinyTraining(resumed, 6);
  first.stop_at = 3;
  const TrainResult b1 = Train(config, RandomWeights(config, 5), first, batch);
  EXPECT_FALSE(b1.finished);
  EXPECT_EQ(b1.last_step, 3);
  // The second call starts from the checkpoint (its `initial` weights are ignored).
  const TrainResult b2 = Train(config, RandomWeights(config, 99), TinyTraining(resumed, 6), batch);
  EXPECT_TRUE(b2.resumed);
  EXPECT_EQ(b2.first_step, 3);
  ASSERT_EQ(a.losses.size(), 6u);
  ASSERT_EQ(b1.losses.size() + b2.losses.size(), 6u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a.losses[i], b1.losses[i]) << "step " << i + 1;
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a.losses[3 + i], b2.losses[i]) << "step " << i + 4;
  int64_t sa = 0, sb = 0;
  const auto wa = LoadTrainingCheckpoint(straight.string(), &sa).second, wb = LoadTrainingCheckpoint(resumed.string(), &sb).second;
  EXPECT_EQ(sa, 6);
  EXPECT_EQ(sb, 6);
  for (const auto& [name, t] : wa) EXPECT_TRUE(at::equal(t, wb.at(name))) << name;
  EXPECT_EQ(ReadLog(resumed / "log.csv").size(), 6u);
}

TEST(Training, ExportedWeightsLoadWithTheirConfig) {
  const ModelConfig config = TinyConfig();
  const auto dir = ScratchDir("train_export");
  const StateDict w = RandomWeights(config, 4);
  ExportWeights((dir / "m.safetensors").string(), config, w, "float16");
  const auto read_config = ConfigFromWeightsFile(dir / "m.safetensors");
  ASSERT_TRUE(read_config.has_value());
  EXPECT_EQ(read_config->ToJson(), config.ToJson());
  const SafetensorsFile f = ReadSafetensors(dir / "m.safetensors");
  for (const auto& [name, t] : f.tensors) {
    EXPECT_EQ(t.scalar_type(), at::kHalf) << name;
    EXPECT_LE((t.to(at::kFloat) - w.at(name)).abs().max().item<double>(), 1e-3 * std::max(1.0, w.at(name).abs().max().item<double>())) << name;
  }
  EXPECT_THROW(ExportWeights((dir / "x.safetensors").string(), config, w, "int8"), OptionError);
}

// Non-finite weights are refused at load with the tensor's name; a non-finite output stops at its
// frame (both used to surface only as NaN depth maps and an empty cloud).
TEST(Weights, NonFiniteValuesAreNamedAtLoadAndOutputsAtTheirFrame) {
  const ModelConfig config = TinyConfig();
  StateDict w = RandomWeights(config, 6);
  w.at("aggregator.frame_blocks.1.attn.qkv.weight")[3][4] = std::nan("");
  const auto dir = ScratchDir("nan_weights");
  ExportWeights((dir / "nan.safetensors").string(), config, w, "float16");
  try {
    LoadModelWeights((dir / "nan.safetensors").string(), "", -1);
    FAIL() << "weights with a NaN were accepted";
  } catch (const WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("'aggregator.frame_blocks.1.attn.qkv.weight' holds 1 non-finite"), std::string::npos) << e.what();
  }
  StepOutput out;
  out.pose_enc = at::zeros({9});
  out.depth = at::ones({4, 5, 1});
  out.depth[2][3][0] = std::numeric_limits<float>::infinity();
  out.depth_conf = at::ones({4, 5});
  out.world_points = at::zeros({4, 5, 3});
  out.world_points_conf = at::ones({4, 5});
  RgbImage image;
  image.width = 5;
  image.height = 4;
  image.data.assign(60, 0);
  try {
    ToFramePrediction(out, image, 17);
    FAIL() << "an infinite depth was exported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("frame 17: the model's depth output is not finite"), std::string::npos) << e.what();
  }
}

// The loader says which format it read a file as, and suggests --config when the shapes fit a
// built-in config (a file without config metadata read as the 1B model used to list 1378 problems).
TEST(Weights, LoaderNamesTheFormatAndSuggestsTheConfig) {
  const auto dir = ScratchDir("loader_messages");
  {
    std::ofstream(dir / "noise.safetensors", std::ios::binary) << std::string("\x13\x37\xca\xfe random bytes, not a header", 30);
    std::ofstream(dir / "noise.weights", std::ios::binary) << std::string("\x13\x37\xca\xfe random bytes", 20);
  }
  try {
    LoadStateDict(dir / "noise.safetensors");
    FAIL();
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("read as safetensors"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(".pth"), std::string::npos) << e.what();
  }
  try {
    LoadStateDict(dir / "noise.weights");
    FAIL();
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("not a weights file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("13 37 ca fe"), std::string::npos) << e.what();
  }
  const StateDict tiny = RandomWeights(NamedConfig("demo-small"), 1);
  try {
    CheckStateDict(tiny, NamedConfig("streamvggt-1b"), "tiny.pth");
    FAIL();
  } catch (const WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("pass --config demo-small"), std::string::npos) << e.what();
  }
}

// The shipped default model reconstructs held-out scenes (seeds training never draws): depth within
// issue #12's targets (AbsRel <= 0.08, delta < 1.25 >= 0.93 after each sequence's scale) on rooms and
// outdoor squares at the training size, streamed as the CLI streams them (ForwardSequence equals it).
TEST(DefaultModel, ReconstructsHeldOutScenes) {
  const std::string path = DefaultWeightsPath();
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  const LoadedModel loaded = LoadModelWeights("", "", -1);
  EXPECT_EQ(loaded.config.ToJson(), NamedConfig("recon-small").ToJson());
  EXPECT_LE(std::filesystem::file_size(path), 16u << 20);
  EXPECT_EQ(loaded.config.head_dim(), 64);
  StreamingModel model(loaded.config, loaded.weights, ModelOptions{});
  datasets::TrainingDataOptions eval;
  eval.evaluation = true;
  eval.sizes = {{224, 168}};
  eval.min_frames = eval.start_max_frames = eval.max_frames = 8;
  eval.frames_per_batch = 16;
  eval.outdoor_fraction = 0.5;
  std::vector<SequenceBatch> batches{datasets::MakeTrainingBatch(eval, 1000), datasets::MakeTrainingBatch(eval, 1001)};
  const auto m = EvaluateSequences(model, batches, false);
  std::printf("default model on 4 held-out 8-frame sequences: AbsRel %.4f delta1 %.4f points_rel %.4f center_rel %.4f fov %.2f deg\n",
              m.at("abs_rel"), m.at("delta1"), m.at("points_rel"), m.at("center_rel"), m.at("fov_deg"));
  EXPECT_LE(m.at("abs_rel"), 0.08);
  EXPECT_GE(m.at("delta1"), 0.93);
  EXPECT_LE(m.at("fov_deg"), 5.0);
  // The camera: the shipped session-31 weights reach a centre error of 0.014 of the scene scale
  // here and a point-map error of 0.099 (AbsRel 0.058, delta 0.966, fov 3.0 deg); session 30's
  // 0.018 and 0.111 (AbsRel 0.060); step 11865 0.0095 and 0.092 (AbsRel 0.055), step 9338 0.017
  // and 0.10, step 5368 0.040 and 0.18.
  EXPECT_LE(m.at("center_rel"), 0.025);
  EXPECT_LE(m.at("points_rel"), 0.14);
}

}  // namespace
}  // namespace streamrecon::models
