// Training the streaming model: the VGGT-family losses on whole sequences (ForwardSequence), the
// learning-rate schedule, resumable checkpoints and the loop (AdamW, bf16 autocast on CUDA,
// gradient clipping, progress, a CSV log). The data come from a callback, one batch per step.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "datasets/training_data.h"
#include "models/config.h"
#include "models/streaming_model.h"
#include "models/weights.h"

namespace streamrecon::models {

using datasets::SequenceBatch;

// Weights of the loss terms (docs/training.md explains each choice).
struct LossOptions {
  double camera_weight = 1.0;     // pose-encoding term
  double depth_weight = 1.0;      // confidence-weighted depth term
  double points_weight = 1.0;     // confidence-weighted point-map term
  double alpha = 0.2;             // weight of -log(confidence) in the confidence-weighted terms
  double gradient_weight = 1.0;   // weight of the spatial-gradient term inside depth and points
  double fov_weight = 0.5;        // field-of-view part of the camera term
  double iteration_gamma = 0.6;   // camera iterations weighted gamma^(last - k)
  // Parts of the camera term beyond the pose encoding (0 = off, the recipe of the shipped model):
  double centre_weight = 0.0;     // L1 of the camera centres -R^T t (what ATE measures)
  double step_weight = 0.0;       // L1 of the centre steps between consecutive frames (scale drift)
};

// The loss and its parts (the parts as plain numbers, for logs).
struct LossTerms {
  at::Tensor total;  // scalar, differentiable
  double camera = 0, depth = 0, points = 0;
  // Regression errors without confidence (for progress and tests): mean |depth - gt| and mean
  // point distance, both in normalised units, and mean |pose_enc - gt| of the last iteration.
  double depth_l1 = 0, points_l2 = 0, pose_l1 = 0;
};

// Camera centres in the first camera's frame, -R^T t, from pose encodings [..., 9]
// (camera_from_first: translation, then the quaternion x, y, z, w; normalised here). Differentiable.
at::Tensor CameraCentres(const at::Tensor& pose_enc);

// The ground truth divided by each sequence's scale: the mean distance of its valid points to the
// first camera (depth, points and translations alike). Returns the scales [B].
at::Tensor NormaliseScale(SequenceBatch& gt);

// The loss of predictions against scale-normalised ground truth (same device).
LossTerms SequenceLoss(const SequenceOutput& pred, const SequenceBatch& gt, const LossOptions& options);

// Linear warm-up to lr over warmup steps, then a cosine to lr * min_lr_ratio at `steps`.
double ScheduledLearningRate(int64_t step, int64_t steps, int64_t warmup, double lr, double min_lr_ratio);

struct TrainOptions {
  std::string run_dir;            // checkpoint, optimiser state, log.csv, loss.png (created)
  int64_t steps = 20000;          // length of the schedule; training stops there
  double lr = 3e-4;               // peak learning rate
  double min_lr_ratio = 0.05;     // final learning rate / lr
  int64_t warmup = 500;           // warm-up steps
  double weight_decay = 0.05;     // AdamW decay of matrices and convolutions (not norms, biases, tokens)
  double clip = 1.0;              // gradient-norm clip (0 = off)
  bool bf16 = true;               // CUDA: bf16 autocast for matrix work (weights and optimiser stay fp32)
  double time_limit_s = 0;        // stop with a checkpoint after this many seconds (0 = no limit)
  int64_t stop_at = 0;            // stop with a checkpoint at this step (0 = at `steps`); the schedule still spans `steps`
  int64_t checkpoint_every = 250; // steps between checkpoints (and at the end)
  int64_t log_every = 10;         // steps between progress lines
  int64_t eval_every = 250;       // steps between evaluations (0 = never)
  std::string device = "cpu";     // cpu or cuda[:N]
  std::string dtype = "float32";  // float32 or float64
  LossOptions loss;

  void Check() const;  // throws OptionError naming the field
};

// One evaluation: named numbers (logged as columns).
using Evaluator = std::function<std::map<std::string, double>(StreamingModel& model)>;

struct TrainResult {
  int64_t first_step = 0;       // the step this call started at (0, or the checkpoint's)
  int64_t last_step = 0;        // steps done after this call
  std::vector<double> losses;   // total loss of each step of this call
  bool finished = false;        // reached options.steps
  bool resumed = false;         // started from a checkpoint in run_dir
};

// Trains from `initial` (or from the checkpoint in run_dir, which wins) with batch(step) as data.
// Writes run_dir/checkpoint.safetensors + optimizer.pt atomically every checkpoint_every steps and at
// the end, run_dir/log.csv row by row, and run_dir/loss.png when gnuplot is present.
TrainResult Train(const ModelConfig& config, const StateDict& initial, const TrainOptions& options,
                  const std::function<SequenceBatch(int64_t step)>& batch, const Evaluator& evaluate = {});

// Accuracy of ForwardSequence on batches with ground truth (no gradients): depth AbsRel and
// delta < 1.25 after each sequence's median scale, point-map error relative to the mean point
// distance after the same kind of scale, camera-centre error relative to the mean distance of the
// sequence's points, and the field-of-view error in degrees. Keys: abs_rel, delta1, points_rel,
// center_rel, fov_deg.
std::map<std::string, double> EvaluateSequences(StreamingModel& model, const std::vector<SequenceBatch>& batches, bool bf16_autocast);

// Draws run_dir/loss.png from log.csv (and eval.csv) with gnuplot; false when gnuplot is absent.
bool PlotTrainingLog(const std::string& run_dir);

// The trained weights of a run folder's checkpoint (fp32) with their config.
std::pair<ModelConfig, StateDict> LoadTrainingCheckpoint(const std::string& run_dir, int64_t* step = nullptr);

// Writes weights as a half-precision safetensors file with the config in its header (the form
// the project ships), atomically. dtype: "float16" or "bfloat16".
void ExportWeights(const std::string& path, const ModelConfig& config, const StateDict& weights, const std::string& dtype,
                   const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace streamrecon::models
