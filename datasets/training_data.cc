// Training batches from the synthetic scenes (see training_data.h).
#include "datasets/training_data.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/synthetic.h"

namespace streamrecon::datasets {
namespace {
using geometry::Compose;
using geometry::ExtrinsicsIntrinsicsToPoseEncoding;
using geometry::Inverse;


uint64_t Mix(uint64_t z) {  // splitmix64 finaliser
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

SequenceBatch SequenceBatch::To(at::Device device) const {
  if (images.device() == device) return *this;
  SequenceBatch out = *this;
  const bool pin = device.is_cuda();
  auto move = [&](const at::Tensor& t) { return (pin ? t.pin_memory() : t).to(device, /*non_blocking=*/pin); };
  out.images = move(images);
  out.depth = move(depth);
  out.valid = move(valid);
  out.world_points = move(world_points);
  out.pose_enc = move(pose_enc);
  return out;
}

void TrainingDataOptions::Check(int patch_size) const {
  if (sizes.empty()) throw OptionError("training data: sizes is empty");
  for (const auto& [w, h] : sizes)
    if (w <= 0 || h <= 0 || w % patch_size != 0 || h % patch_size != 0)
      throw OptionError("training data: frame size " + std::to_string(w) + "x" + std::to_string(h) +
                        " is not a positive multiple of the patch size " + std::to_string(patch_size));
  if (min_frames < 1 || start_max_frames < min_frames || max_frames < start_max_frames)
    throw OptionError("training data: need 1 <= min_frames <= start_max_frames <= max_frames");
  if (frames_per_batch < 1) throw OptionError("training data: frames_per_batch must be positive");
  if (!(fov_min > 0 && fov_max >= fov_min && fov_max < 170)) throw OptionError("training data: need 0 < fov_min <= fov_max < 170");
  if (!(outdoor_fraction >= 0 && outdoor_fraction <= 1)) throw OptionError("training data: outdoor_fraction must be in [0, 1]");
  if (!(trajectory_factor_min >= 1 && trajectory_factor_max >= trajectory_factor_min))
    throw OptionError("training data: need 1 <= trajectory_factor_min <= trajectory_factor_max (found " +
                      std::to_string(trajectory_factor_min) + " and " + std::to_string(trajectory_factor_max) + ")");
}

SequenceBatch MakeTrainingBatch(const TrainingDataOptions& o, int64_t step, int threads) {
  std::mt19937_64 rng(Mix(Mix(o.seed) ^ static_cast<uint64_t>(step) ^ (o.evaluation ? 0x5EEDull : 0)));
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto integer = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  // Size: the first one half of the time.
  const size_t size_index = (o.sizes.size() == 1 || integer(0, 1) == 0) ? 0 : static_cast<size_t>(integer(1, static_cast<int64_t>(o.sizes.size()) - 1));
  const auto [W, H] = o.sizes[size_index];
  const double grown = o.grow_steps > 0 ? std::min(1.0, static_cast<double>(step) / o.grow_steps) : 1.0;
  const int cap = o.start_max_frames + static_cast<int>(std::floor(grown * (o.max_frames - o.start_max_frames) + 1e-9));
  const int S = static_cast<int>(integer(o.min_frames, cap));
  const int B = std::max(1, o.frames_per_batch / S);

  SequenceBatch batch;
  batch.images = at::empty({B, S, 3, H, W}, at::kFloat);
  batch.depth = at::empty({B, S, H, W}, at::kFloat);
  batch.world_points = at::empty({B, S, H, W, 3}, at::kFloat);
  batch.pose_enc = at::empty({B, S, 9}, at::kFloat);
  for (int b = 0; b < B; ++b) {
    SyntheticOptions so;
    so.width = W;
    so.height = H;
    const uint64_t r = rng();
    so.seed = o.evaluation ? r % kFirstTrainingSeed : kFirstTrainingSeed + r % (uint64_t{1} << 40);
    so.trajectory = static_cast<Trajectory>(integer(0, 2));
    so.environment = uniform(0, 1) < o.outdoor_fraction ? Environment::kOutdoor : Environment::kRoom;
    so.fov_x_deg = uniform(o.fov_min, o.fov_max);
    so.frames = std::max(S, static_cast<int>(std::lround(S * uniform(o.trajectory_factor_min, o.trajectory_factor_max))));
    so.threads = threads;
    const int start = static_cast<int>(integer(0, so.frames - S));
    batch.scene_seeds.push_back(so.seed);
    const SyntheticScene scene(so);
    Rigid3 first_from_world;
    for (int s = 0; s < S; ++s) {
      const SyntheticFrame f = scene.Render(start + s);
      const Rigid3 cam_from_world = Inverse(f.world_from_cam);
      if (s == 0) first_from_world = cam_from_world;
      const Rigid3 first_from_cam = Compose(first_from_world, f.world_from_cam);
      const auto enc = ExtrinsicsIntrinsicsToPoseEncoding(Inverse(first_from_cam), f.intrinsics, W, H);
      float* pe = batch.pose_enc[b][s].data_ptr<float>();
      for (int i = 0; i < 9; ++i) pe[i] = static_cast<float>(enc[i]);
      float* img = batch.images[b][s].data_ptr<float>();
      float* dep = batch.depth[b][s].data_ptr<float>();
      float* pts = batch.world_points[b][s].data_ptr<float>();
      const auto& k = f.intrinsics;
      const auto& R = first_from_cam.R;
      const auto& t = first_from_cam.t;
      const size_t n = static_cast<size_t>(W) * H;
      for (int v = 0; v < H; ++v) {
        for (int u = 0; u < W; ++u) {
          const size_t i = static_cast<size_t>(v) * W + u;
          for (int c = 0; c < 3; ++c) img[c * n + i] = f.frame.image.data[i * 3 + c] / 255.0f;
          const double z = f.depth[i];
          const bool ok = std::isfinite(z) && z > 0;
          dep[i] = ok ? static_cast<float>(z) : 0.0f;
          const double x = ok ? (u - k.cx) / k.fx * z : 0, y = ok ? (v - k.cy) / k.fy * z : 0, zz = ok ? z : 0;
          for (int c = 0; c < 3; ++c) pts[i * 3 + c] = static_cast<float>(R[c * 3] * x + R[c * 3 + 1] * y + R[c * 3 + 2] * zz + (ok ? t[c] : 0));
        }
      }
    }
  }
  batch.valid = batch.depth > 0;
  return batch;
}

BatchPrefetcher::BatchPrefetcher(TrainingDataOptions options, int64_t first_step, int depth)
    : options_(std::move(options)), next_step_(first_step), depth_(std::max(1, depth)) {}

BatchPrefetcher::~BatchPrefetcher() {
  for (auto& f : queue_)
    if (f.valid()) f.wait();
}

SequenceBatch BatchPrefetcher::Next() {
  while (static_cast<int>(queue_.size()) < depth_) {
    const int64_t step = next_step_++;
    queue_.push_back(std::async(std::launch::async, [o = options_, step] { return MakeTrainingBatch(o, step, 1); }));
  }
  SequenceBatch b = queue_.front().get();
  queue_.pop_front();
  return b;
}

}  // namespace streamrecon::datasets
