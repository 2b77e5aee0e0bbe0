// `streamrecon train`: trains a model of the StreamVGGT family on synthetic scenes with exact
// ground truth, rendered on the fly (scene seeds >= 100000; lower seeds are kept for evaluation).
// Resumable: a run folder holds the checkpoint, the optimiser state, log.csv, eval.csv, loss.png.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <thread>

#include "app/commands.h"
#include "app/common_options.h"
#include "app/stream_setup.h"
#include "core/errors.h"
#include "datasets/training_data.h"
#include "models/training.h"

namespace streamrecon::app {
namespace {

struct TrainArgs {
  models::TrainOptions train;
  datasets::TrainingDataOptions data;
  std::string config = "recon-small";
  std::string init;  // weights to start from (else seeded random)
  uint64_t init_seed = 0;
  std::string sizes = "224x168,196x140,252x182,168x224";
  int prefetch = 0;
  int eval_batches = 2;
  std::string export_path;
  std::string export_dtype = "float16";
  bool no_bf16 = false;
  bool export_only = false;
};

std::vector<std::pair<int, int>> ParseSizes(const std::string& text, int patch) {
  std::vector<std::pair<int, int>> sizes;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int w = 0, h = 0;
    if (!datasets::ParsePixelSize(item, &w, &h) || h == 0)
      throw OptionError("--sizes: '" + item + "' is not WIDTHxHEIGHT (e.g. 224x168); expected a comma-separated list");
    if (w % patch != 0 || h % patch != 0)
      throw OptionError("--sizes: " + item + " is not a multiple of the patch size " + std::to_string(patch) + " in both directions (e.g. 224x168)");
    sizes.emplace_back(w, h);
  }
  if (sizes.empty()) throw OptionError("--sizes is empty: expected a comma-separated list such as 224x168,196x140");
  return sizes;
}

int ExportRun(const TrainArgs& args) {
  int64_t step = 0;
  auto [config, weights] = models::LoadTrainingCheckpoint(args.train.run_dir, &step);
  models::ExportWeights(args.export_path, config, weights, args.export_dtype, {{"step", std::to_string(step)}, {"trained_by", "streamrecon train"}});
  spdlog::info("wrote {} ({} weights of step {})", args.export_path, args.export_dtype, step);
  models::PlotTrainingLog(args.train.run_dir);
  return 0;
}

int RunTrain(TrainArgs args) {
  if (args.export_only) {
    if (args.export_path.empty()) throw OptionError("--export-only needs --export FILE");
    return ExportRun(args);
  }
  if (args.train.device == "auto") args.train.device = at::hasCUDA() ? "cuda" : "cpu";
  args.train.bf16 = !args.no_bf16;
  const models::ModelConfig config = models::LoadConfig(args.config);
  args.data.sizes = ParseSizes(args.sizes, config.patch_size);
  args.data.Check(config.patch_size);
  args.train.Check();
  models::StateDict initial;
  if (!args.init.empty()) {
    initial = models::LoadStateDict(args.init);
    models::CheckStateDict(initial, config, args.init);
  } else {
    initial = models::RandomWeights(config, args.init_seed);
  }
  int64_t params = 0;
  for (const auto& [name, t] : initial) params += t.numel();
  const int threads = args.prefetch > 0 ? args.prefetch : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 2);
  spdlog::info("training {} ({:.2f} M parameters) on {} for {} steps into {}; {} batches rendered ahead", args.config, params / 1e6,
               args.train.device, args.train.steps, args.train.run_dir, threads);

  // Held-out evaluation batches: scene seeds below 100000, fixed for the whole run.
  std::vector<datasets::SequenceBatch> eval_batches;
  if (args.train.eval_every > 0 && args.eval_batches > 0) {
    datasets::TrainingDataOptions eval = args.data;
    eval.evaluation = true;
    eval.sizes = {args.data.sizes.front()};
    eval.grow_steps = 0;  // the longest sequences
    eval.min_frames = eval.max_frames;
    for (int i = 0; i < args.eval_batches; ++i) eval_batches.push_back(datasets::MakeTrainingBatch(eval, i, 0));
  }
  models::Evaluator evaluate;
  if (!eval_batches.empty())
    evaluate = [&](models::StreamingModel& model) { return models::EvaluateSequences(model, eval_batches, args.train.bf16); };

  int64_t first_step = 0;
  {
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(args.train.run_dir) / "checkpoint.safetensors", ec))
      models::LoadTrainingCheckpoint(args.train.run_dir, &first_step);
  }
  datasets::BatchPrefetcher prefetcher(args.data, first_step, threads);
  int64_t expected = first_step;
  const auto batch = [&](int64_t step) {
    if (step != expected) throw Error("internal: training asked for batch " + std::to_string(step) + ", expected " + std::to_string(expected));
    ++expected;
    return prefetcher.Next();
  };
  const models::TrainResult r = models::Train(config, initial, args.train, batch, evaluate);
  spdlog::info("{} at step {} of {}{}", r.finished ? "finished" : "stopped", r.last_step, args.train.steps,
               r.finished ? "" : " (run the same command again to continue)");
  if (!args.export_path.empty()) ExportRun(args);
  return 0;
}

}  // namespace

Runner AddTrainCommand(CLI::App& parent) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = parent.add_subcommand(
      "train",
      "Train a model on synthetic scenes with exact ground truth (rendered on the fly; scene seeds >= 100000, lower seeds are\n"
      "kept for evaluation). Resumable: running the same command again continues from the run folder's checkpoint.");
  auto& t = args->train;
  auto& d = args->data;
  cmd->add_option("--run", t.run_dir, "Run folder: checkpoint.safetensors, optimizer.pt, log.csv, eval.csv, loss.png")->required();
  cmd->add_option("--config", args->config, "Model config: a built-in name (recon-small, demo-small, ...) or a JSON file")->capture_default_str();
  cmd->add_option("--init", args->init, "Start from these weights instead of seeded random ones (ignored when the run folder has a checkpoint)");
  cmd->add_option("--init-seed", args->init_seed, "Seed of the random initial weights")->capture_default_str();
  cmd->add_option("--steps", t.steps, "Optimiser steps of the whole schedule; training stops there")->check(kPositive)->capture_default_str();
  cmd->add_option("--lr", t.lr, "Peak learning rate (AdamW, betas 0.9/0.95)")->capture_default_str();
  cmd->add_option("--min-lr-ratio", t.min_lr_ratio, "Final learning rate as a fraction of --lr (cosine decay)")->capture_default_str();
  cmd->add_option("--warmup", t.warmup, "Linear warm-up steps")->capture_default_str();
  cmd->add_option("--weight-decay", t.weight_decay, "AdamW weight decay of matrices and convolutions")->capture_default_str();
  cmd->add_option("--camera-weight", t.loss.camera_weight, "Weight of the camera (pose encoding) loss term")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--centre-weight", t.loss.centre_weight,
                  "Camera term: also the L1 of the camera centres -R^T t, which ATE measures (0 = off)")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--step-weight", t.loss.step_weight,
                  "Camera term: also the L1 of the centre steps between consecutive frames, against scale drift (0 = off)")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_option("--depth-weight", t.loss.depth_weight, "Weight of the confidence-weighted depth term")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--points-weight", t.loss.points_weight, "Weight of the confidence-weighted point-map term")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--clip", t.clip, "Clip the gradient norm to this (0 = no clipping)")->capture_default_str();
  cmd->add_option("--time-limit", t.time_limit_s, "Stop with a checkpoint after this many seconds (0 = run to --steps)")->capture_default_str();
  cmd->add_option("--stop-at", t.stop_at, "Stop with a checkpoint at this step (0 = at --steps); rerun to continue")->capture_default_str();
  cmd->add_option("--checkpoint-every", t.checkpoint_every, "Steps between checkpoints (one is also written at the end)")->capture_default_str();
  cmd->add_option("--log-every", t.log_every, "Steps between progress lines (log.csv gets every step)")->capture_default_str();
  cmd->add_option("--eval-every", t.eval_every, "Steps between evaluations on held-out scenes (0 = never)")->capture_default_str();
  cmd->add_option("--eval-batches", args->eval_batches, "Held-out batches per evaluation")->capture_default_str();
  cmd->add_option("--device", t.device, "cpu, cuda[:N] or auto (CUDA when present)")->capture_default_str();
  cmd->add_option("--dtype", t.dtype, "Weights and optimiser precision: float32 or float64")->capture_default_str();
  cmd->add_flag("--no-bf16", args->no_bf16, "CUDA: keep matrix work in fp32 (default: bf16 autocast)");
  cmd->add_option("--seed", d.seed, "Data seed: batch k depends only on (seed, k)")->capture_default_str();
  cmd->add_option("--sizes", args->sizes, "Frame sizes WxH (multiples of the patch size), the first one drawn half of the time")->capture_default_str();
  cmd->add_option("--frames-per-batch", d.frames_per_batch, "Frames per batch (sequences per batch = this / frames per sequence)")->capture_default_str();
  cmd->add_option("--min-frames", d.min_frames, "Shortest sequence")->capture_default_str();
  cmd->add_option("--start-max-frames", d.start_max_frames, "Longest sequence at step 0")->capture_default_str();
  cmd->add_option("--max-frames", d.max_frames, "Longest sequence from --grow-steps on")->capture_default_str();
  cmd->add_option("--grow-steps", d.grow_steps, "Steps over which the longest sequence grows")->capture_default_str();
  cmd->add_option("--fov-min", d.fov_min, "Smallest horizontal field of view, degrees")->capture_default_str();
  cmd->add_option("--fov-max", d.fov_max, "Largest horizontal field of view, degrees")->capture_default_str();
  cmd->add_option("--outdoor-fraction", d.outdoor_fraction, "Share of outdoor scenes")->capture_default_str();
  cmd->add_option("--trajectory-factor-min", d.trajectory_factor_min,
                  "A sequence of S frames is taken from a camera path of F x S frames, F uniform in [min, max]; "
                  "1 lets a sequence span its whole path (a full orbit)")
      ->check(CLI::Range(1.0, 100.0))->capture_default_str();
  cmd->add_option("--trajectory-factor-max", d.trajectory_factor_max, "Largest path factor F (see --trajectory-factor-min)")
      ->check(CLI::Range(1.0, 100.0))->capture_default_str();
  cmd->add_option("--prefetch", args->prefetch, "Batches rendered ahead on CPU threads (0 = cores - 2)")->capture_default_str();
  cmd->add_option("--export", args->export_path, "After training, write the weights here as half-precision safetensors with the config");
  cmd->add_option("--export-dtype", args->export_dtype, "float16 or bfloat16")->capture_default_str();
  cmd->add_flag("--export-only", args->export_only, "Only write --export from the run folder's checkpoint (no training)");
  return [cmd, args]() { return cmd->parsed() ? RunTrain(*args) : -1; };
}

}  // namespace streamrecon::app
