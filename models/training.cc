// Training loop, losses, schedule and checkpoints (see training.h). The only translation unit that
// includes the LibTorch C++ frontend (optimiser and serialisation).
#include "models/training.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/errors.h"

namespace streamrecon::models {
namespace fs = std::filesystem;
using at::Tensor;

namespace {

Tensor MaskedMean(const Tensor& x, const Tensor& mask) {
  const Tensor m = mask.to(x.scalar_type());
  return (x * m).sum() / m.sum().clamp_min(1.0);
}

// Confidence-weighted regression of a per-pixel error [B, S, H, W] plus the gradient term on the
// difference map diff [B, S, H, W, c] (c = 1 for depth, 3 for points).
Tensor ConfidenceTerm(const Tensor& diff, const Tensor& conf, const Tensor& valid, const LossOptions& o) {
  const Tensor err = diff.size(-1) == 1 ? diff.squeeze(-1).abs() : at::sqrt(diff.pow(2).sum(-1) + 1e-12);
  Tensor loss = MaskedMean(conf * err - o.alpha * at::log(conf), valid);
  if (o.gradient_weight > 0) {
    auto grad = [&](int64_t dim) {
      const int64_t n = diff.size(dim);
      const Tensor g = diff.narrow(dim, 1, n - 1) - diff.narrow(dim, 0, n - 1);
      const Tensor g_err = g.size(-1) == 1 ? g.squeeze(-1).abs() : at::sqrt(g.pow(2).sum(-1) + 1e-12);
      const int64_t pdim = dim;  // the same dimension of the [B, S, H, W] maps
      const Tensor both = valid.narrow(pdim, 1, n - 1) & valid.narrow(pdim, 0, n - 1);
      const Tensor c = 0.5 * (conf.narrow(pdim, 1, n - 1) + conf.narrow(pdim, 0, n - 1));
      return MaskedMean(c * g_err, both);
    };
    loss = loss + o.gradient_weight * (grad(2) + grad(3));
  }
  return loss;
}

std::string Fmt(double v) {
  std::ostringstream s;
  s.precision(6);
  s << v;
  return s.str();
}

}  // namespace

namespace {

// Runs model.ForwardSequence under bf16 autocast on CUDA when asked (restoring the state after).
SequenceOutput ForwardMaybeAutocast(StreamingModel& model, const Tensor& images, bool autocast) {
  if (!autocast) return model.ForwardSequence(images);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  struct Restore {
    ~Restore() {
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
    }
  } restore;
  return model.ForwardSequence(images);
}

}  // namespace

std::map<std::string, double> EvaluateSequences(StreamingModel& model, const std::vector<SequenceBatch>& batches, bool bf16_autocast) {
  at::NoGradGuard no_grad;
  double abs_rel = 0, delta1 = 0, points_rel = 0, center_rel = 0, fov = 0;
  int64_t sequences = 0;
  const at::Device device = model.Parameters().begin()->second.device();
  for (const SequenceBatch& host : batches) {
    const SequenceBatch b = host.To(device);
    const SequenceOutput out = ForwardMaybeAutocast(model, b.images, bf16_autocast && device.is_cuda());
    for (int64_t i = 0; i < b.batch(); ++i) {
      const Tensor valid = b.valid[i];
      const Tensor gt_d = b.depth[i].masked_select(valid).to(at::kDouble);
      const Tensor pr_d = out.depth[i].squeeze(-1).masked_select(valid).to(at::kDouble).clamp_min(1e-12);
      const double s = (gt_d / pr_d).median().item<double>();
      const Tensor d = pr_d * s;
      abs_rel += ((d - gt_d).abs() / gt_d).mean().item<double>();
      delta1 += (at::maximum(d / gt_d, gt_d / d) < 1.25).to(at::kDouble).mean().item<double>();
      const Tensor gt_p = b.world_points[i].to(at::kDouble).index({valid});       // [N, 3]
      const Tensor pr_p = out.world_points[i].to(at::kDouble).index({valid});
      const double mean_dist = gt_p.norm(2, -1).mean().item<double>();
      const double sp = (gt_p.norm(2, -1) / pr_p.norm(2, -1).clamp_min(1e-12)).median().item<double>();
      points_rel += (pr_p * sp - gt_p).norm(2, -1).mean().item<double>() / mean_dist;
      // Camera centres (in the first camera's frame) from the pose encodings, scaled like the points.
      const Tensor gt_c = CameraCentres(b.pose_enc[i].to(at::kDouble)), pr_c = CameraCentres(out.pose_enc[i].to(at::kDouble)) * sp;
      center_rel += (pr_c - gt_c).norm(2, -1).mean().item<double>() / mean_dist;
      fov += (out.pose_enc[i].narrow(-1, 7, 2).to(at::kDouble) - b.pose_enc[i].narrow(-1, 7, 2).to(at::kDouble)).abs().mean().item<double>() *
             180.0 / M_PI;
      ++sequences;
    }
  }
  const double n = std::max<int64_t>(1, sequences);
  return {{"abs_rel", abs_rel / n}, {"delta1", delta1 / n}, {"points_rel", points_rel / n}, {"center_rel", center_rel / n}, {"fov_deg", fov / n}};
}

bool PlotTrainingLog(const std::string& run_dir) {
  const fs::path dir(run_dir);
  if (!fs::exists(dir / "log.csv")) return false;
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    spdlog::info("gnuplot not found: {} not drawn (log.csv has the numbers)", (dir / "loss.png").string());
    return false;
  }
  const bool with_eval = fs::exists(dir / "eval.csv");
  std::string script =
      "set datafile separator ','\n"
      "set terminal pngcairo size 1000," + std::string(with_eval ? "760" : "420") + " noenhanced\n"
      "set output 'loss.png.tmp'\n" +
      std::string(with_eval ? "set multiplot layout 2,1\n" : "") +
      "set title 'training loss (per step) and its parts'\nset xlabel 'step'\nset logscale y\nset key outside right\nset grid\n"
      "plot 'log.csv' every ::1 using 1:($7) with lines lw 1 title 'depth L1', '' every ::1 using 1:($8) with lines lw 1 title 'points L2',"
      " '' every ::1 using 1:($4) with lines lw 1 title 'camera', '' every ::1 using 1:($9) with lines lw 1 title 'pose L1'\n";
  if (with_eval)
    script += "set title 'held-out scenes (evaluation seeds), log scale'\nset key autotitle columnhead\n"
              "plot for [i=2:*] 'eval.csv' using 1:i with linespoints\nunset multiplot\n";
  const fs::path gp = dir / "loss.gp";
  WriteTextAtomically(gp, script);
  const std::string cmd = "cd '" + dir.string() + "' && gnuplot loss.gp >/dev/null 2>&1 && mv -f loss.png.tmp loss.png";
  const bool ok = std::system(cmd.c_str()) == 0;
  if (!ok) {
    std::error_code ec;
    fs::remove(dir / "loss.png.tmp", ec);
  }
  return ok;
}

Tensor CameraCentres(const Tensor& pose_enc) {
  const Tensor q = pose_enc.narrow(-1, 3, 4) / pose_enc.narrow(-1, 3, 4).norm(2, -1, true).clamp_min(1e-12);
  const Tensor x = q.select(-1, 0), y = q.select(-1, 1), z = q.select(-1, 2), w = q.select(-1, 3);
  std::vector<int64_t> shape = pose_enc.sizes().vec();
  shape.back() = 3;
  shape.push_back(3);
  const Tensor R = at::stack({1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                              2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                              2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)}, -1).view(shape);
  return -at::matmul(R.transpose(-1, -2), pose_enc.narrow(-1, 0, 3).unsqueeze(-1)).squeeze(-1);
}

Tensor NormaliseScale(SequenceBatch& gt) {
  const Tensor v = gt.valid.to(gt.world_points.scalar_type());
  const Tensor dist = gt.world_points.norm(2, -1);  // [B, S, H, W]
  const Tensor scale = ((dist * v).sum({1, 2, 3}) / v.sum({1, 2, 3}).clamp_min(1.0)).clamp_min(1e-6);  // [B]
  gt.depth = gt.depth / scale.view({-1, 1, 1, 1});
  gt.world_points = gt.world_points / scale.view({-1, 1, 1, 1, 1});
  gt.pose_enc = at::cat({gt.pose_enc.narrow(-1, 0, 3) / scale.view({-1, 1, 1}), gt.pose_enc.narrow(-1, 3, 6)}, -1);
  return scale;
}

LossTerms SequenceLoss(const SequenceOutput& pred, const SequenceBatch& gt, const LossOptions& o) {
  const auto dtype = gt.depth.scalar_type();
  LossTerms terms;
  // Camera: every refinement iteration, the later ones weighted more.
  Tensor camera = at::zeros({}, gt.depth.options());
  const size_t n = pred.pose_iterations.size();
  double weight_sum = 0;
  const Tensor gt_q = gt.pose_enc.narrow(-1, 3, 4);
  // Centres [B, S, 3] and their steps between consecutive frames, for the centre and step parts.
  const bool centres = o.centre_weight > 0 || o.step_weight > 0;
  auto steps = [](const Tensor& c) { return c.narrow(-2, 1, c.size(-2) - 1) - c.narrow(-2, 0, c.size(-2) - 1); };
  const Tensor gt_c = centres ? CameraCentres(gt.pose_enc) : Tensor();
  for (size_t k = 0; k < n; ++k) {
    const double wk = std::pow(o.iteration_gamma, static_cast<double>(n - 1 - k));
    weight_sum += wk;
    const Tensor p = pred.pose_iterations[k].to(dtype);
    const Tensor lt = (p.narrow(-1, 0, 3) - gt.pose_enc.narrow(-1, 0, 3)).abs().mean();
    const Tensor q = p.narrow(-1, 3, 4);
    const Tensor lq = at::minimum((q - gt_q).abs().sum(-1), (q + gt_q).abs().sum(-1)).mean() / 4;  // q and -q: one rotation
    const Tensor lf = (p.narrow(-1, 7, 2) - gt.pose_enc.narrow(-1, 7, 2)).abs().mean();
    Tensor part = lt + lq + o.fov_weight * lf;
    if (centres) {
      const Tensor c = CameraCentres(p);
      if (o.centre_weight > 0) part = part + o.centre_weight * (c - gt_c).abs().mean();
      if (o.step_weight > 0 && c.size(-2) > 1) part = part + o.step_weight * (steps(c) - steps(gt_c)).abs().mean();
    }
    camera = camera + wk * part;
  }
  camera = camera / std::max(weight_sum, 1e-12);
  const Tensor ddiff = pred.depth.to(dtype) - gt.depth.unsqueeze(-1);
  const Tensor depth = ConfidenceTerm(ddiff, pred.depth_conf.to(dtype), gt.valid, o);
  const Tensor pdiff = pred.world_points.to(dtype) - gt.world_points;
  const Tensor points = ConfidenceTerm(pdiff, pred.world_points_conf.to(dtype), gt.valid, o);
  terms.total = o.camera_weight * camera + o.depth_weight * depth + o.points_weight * points;
  terms.camera = camera.item<double>();
  terms.depth = depth.item<double>();
  terms.points = points.item<double>();
  {
    at::NoGradGuard no_grad;
    terms.depth_l1 = MaskedMean(ddiff.squeeze(-1).abs(), gt.valid).item<double>();
    terms.points_l2 = MaskedMean(pdiff.norm(2, -1), gt.valid).item<double>();
    terms.pose_l1 = (pred.pose_enc.to(dtype) - gt.pose_enc).abs().mean().item<double>();
  }
  return terms;
}

double ScheduledLearningRate(int64_t step, int64_t steps, int64_t warmup, double lr, double min_lr_ratio) {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = std::max<int64_t>(1, steps - warmup);
  const double t = std::clamp(static_cast<double>(step - warmup) / span, 0.0, 1.0);
  const double min_lr = lr * min_lr_ratio;
  return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * t));
}

void TrainOptions::Check() const {
  if (run_dir.empty()) throw OptionError("training: run_dir is empty");
  if (steps < 1) throw OptionError("training: steps must be positive, got " + std::to_string(steps));
  if (!(lr > 0) || !std::isfinite(lr)) throw OptionError("training: lr must be a positive number");
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1)) throw OptionError("training: min_lr_ratio must be in [0, 1]");
  if (warmup < 0) throw OptionError("training: warmup must be >= 0");
  if (!(weight_decay >= 0)) throw OptionError("training: weight_decay must be >= 0");
  if (!(clip >= 0)) throw OptionError("training: clip must be >= 0");
  if (!(time_limit_s >= 0)) throw OptionError("training: time_limit_s must be >= 0");
  if (stop_at < 0) throw OptionError("training: stop_at must be >= 0");
  if (checkpoint_every < 1 || log_every < 1 || eval_every < 0) throw OptionError("training: checkpoint_every and log_every must be positive, eval_every >= 0");
  if (dtype != "float32" && dtype != "float64") throw OptionError("training: dtype must be float32 or float64, got '" + dtype + "'");
}

std::pair<ModelConfig, StateDict> LoadTrainingCheckpoint(const std::string& run_dir, int64_t* step) {
  const fs::path path = fs::path(run_dir) / "checkpoint.safetensors";
  if (!fs::exists(path)) throw FileError("no training checkpoint in " + run_dir + " (expected " + path.string() + ")");
  SafetensorsFile f = ReadSafetensors(path);
  if (!f.metadata.count("config") || !f.metadata.count("step"))
    throw FileError(path.string() + ": not a training checkpoint (its header lacks 'config' or 'step')");
  const ModelConfig config = ModelConfig::FromJson(nlohmann::json::parse(f.metadata.at("config")));
  if (step) *step = std::stoll(f.metadata.at("step"));
  return {config, std::move(f.tensors)};
}

void ExportWeights(const std::string& path, const ModelConfig& config, const StateDict& weights, const std::string& dtype,
                   const std::map<std::string, std::string>& extra_metadata) {
  if (dtype != "float16" && dtype != "bfloat16") throw OptionError("export dtype must be float16 or bfloat16, got '" + dtype + "'");
  const auto st = dtype == "float16" ? at::kHalf : at::kBFloat16;
  StateDict out;
  for (const auto& [name, t] : weights) {
    if (IsIgnoredParameter(name)) continue;
    const Tensor h = t.detach().to(at::kCPU).to(at::kFloat);
    if (dtype == "float16" && h.abs().max().item<double>() > 65504.0)
      throw Error("cannot export " + name + " as float16: a value exceeds the float16 range (use bfloat16)");
    out.emplace(name, h.to(st).contiguous());
  }
  std::map<std::string, std::string> meta = extra_metadata;
  meta["config"] = config.ToJson().dump();
  WriteSafetensors(path, out, meta);
}

TrainResult Train(const ModelConfig& config, const StateDict& initial, const TrainOptions& options,
                  const std::function<SequenceBatch(int64_t)>& batch, const Evaluator& evaluate) {
  options.Check();
  config.Check();
  const fs::path dir(options.run_dir);
  EnsureWritableFolder(dir);
  const fs::path ckpt = dir / "checkpoint.safetensors", opt_path = dir / "optimizer.pt";
  const fs::path log_path = dir / "log.csv", eval_path = dir / "eval.csv";

  TrainResult result;
  int64_t step = 0;
  StateDict start = initial;
  if (fs::exists(ckpt)) {
    auto [saved_config, weights] = LoadTrainingCheckpoint(options.run_dir, &step);
    if (saved_config.ToJson() != config.ToJson())
      throw OptionError("the checkpoint in " + options.run_dir + " was trained with another model config; use a new run folder");
    start = std::move(weights);
    result.resumed = true;
    spdlog::info("resuming {} at step {}", ckpt.string(), step);
  }
  result.first_step = step;

  ModelOptions mo;
  mo.device = options.device;
  mo.dtype = options.dtype;
  mo.trainable = true;
  StreamingModel model(config, start, mo);
  const StateDict params = model.Parameters();
  std::vector<Tensor> decay, no_decay, all;
  for (const auto& [name, t] : params) {
    if (IsIgnoredParameter(name) || !t.requires_grad()) continue;
    const bool is_token = name.find("token") != std::string::npos || name.find("pos_embed") != std::string::npos;
    (t.dim() >= 2 && !is_token ? decay : no_decay).push_back(t);
    all.push_back(t);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(options.lr).betas({0.9, 0.95}).weight_decay(options.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options.lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups), torch::optim::AdamWOptions(options.lr).betas({0.9, 0.95}));
  // Without optimiser state (a checkpoint carried without optimizer.pt, or --init weights at a
  // later step) the AdamW moments start fresh and the learning rate re-warms over rewarm steps.
  int64_t rewarm = 0;
  if (result.resumed && !fs::exists(opt_path)) {
    rewarm = std::max<int64_t>(1, options.warmup / 5);
    spdlog::warn("{} is missing: the optimiser moments start fresh at step {} and the learning rate re-warms over {} steps", opt_path.string(),
                 step, rewarm);
  } else if (result.resumed) {
    torch::serialize::InputArchive archive;
    archive.load_from(opt_path.string());
    optimizer.load(archive);
    Tensor saved_step;
    archive.read("step", saved_step);
    if (saved_step.item<int64_t>() != step)
      throw FileError(opt_path.string() + " belongs to step " + std::to_string(saved_step.item<int64_t>()) + ", the weights to step " +
                      std::to_string(step));
  }

  auto save = [&](int64_t at_step) {
    WriteFileAtomically(opt_path, [&](const fs::path& tmp) {
      torch::serialize::OutputArchive archive;
      optimizer.save(archive);
      archive.write("step", torch::tensor(at_step));
      archive.save_to(tmp.string());
    });
    StateDict fp32;
    for (const auto& [name, t] : params) fp32.emplace(name, t.detach().to(at::kCPU).to(at::kFloat));
    WriteSafetensors(ckpt, fp32, {{"config", config.ToJson().dump()}, {"step", std::to_string(at_step)}, {"format", "streamrecon-train-1"}});
  };

  const bool new_log = !fs::exists(log_path);
  std::ofstream log(log_path, std::ios::app);
  if (!log) throw FileError("cannot write " + log_path.string());
  if (new_log) log << "step,lr,loss,camera,depth,points,depth_l1,points_l2,pose_l1,grad_norm,frames,seconds,frames_per_s\n";
  std::vector<std::string> eval_columns;

  const bool cuda = at::Device(options.device).is_cuda();
  const bool autocast = cuda && options.bf16;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  double window_frames = 0, window_start = 0;
  int non_finite = 0;
  int64_t saved_at = step;
  const int64_t stop = options.stop_at > 0 ? std::min(options.stop_at, options.steps) : options.steps;
  while (step < stop) {
    if (options.time_limit_s > 0 && elapsed() >= options.time_limit_s) {
      spdlog::info("time limit of {:.0f} s reached at step {}", options.time_limit_s, step);
      break;
    }
    const double step_begin = elapsed();
    double lr = ScheduledLearningRate(step, options.steps, options.warmup, options.lr, options.min_lr_ratio);
    if (rewarm > 0) lr *= std::min(1.0, static_cast<double>(step - result.first_step + 1) / static_cast<double>(rewarm));
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    SequenceBatch b = batch(step).To(at::Device(options.device));
    if (options.dtype == "float64") {
      b.images = b.images.to(at::kDouble);
      b.depth = b.depth.to(at::kDouble);
      b.world_points = b.world_points.to(at::kDouble);
      b.pose_enc = b.pose_enc.to(at::kDouble);
    }
    NormaliseScale(b);
    optimizer.zero_grad();
    const SequenceOutput out = ForwardMaybeAutocast(model, b.images, autocast);
    const LossTerms loss = SequenceLoss(out, b, options.loss);
    const double total = loss.total.item<double>();
    if (!std::isfinite(total)) {
      if (++non_finite >= 3) throw Error("training diverged: the loss was not finite at 3 steps in a row (last: step " + std::to_string(step) + ")");
      spdlog::warn("step {}: loss is not finite; update skipped", step);
      ++step;
      continue;
    }
    non_finite = 0;
    loss.total.backward();
    double grad_norm = 0;
    if (options.clip > 0) {
      grad_norm = torch::nn::utils::clip_grad_norm_(all, options.clip);
    } else {
      for (const auto& t : all)
        if (t.grad().defined()) grad_norm += t.grad().pow(2).sum().item<double>();
      grad_norm = std::sqrt(grad_norm);
    }
    optimizer.step();
    ++step;
    result.losses.push_back(total);
    const double frames = static_cast<double>(b.batch() * b.frames());
    window_frames += frames;
    const double now = elapsed();
    log << step << ',' << Fmt(lr) << ',' << Fmt(total) << ',' << Fmt(loss.camera) << ',' << Fmt(loss.depth) << ',' << Fmt(loss.points) << ','
        << Fmt(loss.depth_l1) << ',' << Fmt(loss.points_l2) << ',' << Fmt(loss.pose_l1) << ',' << Fmt(grad_norm) << ',' << frames << ','
        << Fmt(now) << ',' << Fmt(frames / std::max(1e-9, now - step_begin)) << '\n';
    if (step % options.log_every == 0 || step == options.steps) {
      const double rate = window_frames / std::max(1e-9, now - window_start);
      spdlog::info("step {}/{}  loss {:.4f} (camera {:.4f}, depth {:.4f}, points {:.4f})  depth L1 {:.4f}  lr {:.2e}  |g| {:.2f}  {:.0f} frames/s",
                   step, options.steps, total, loss.camera, loss.depth, loss.points, loss.depth_l1, lr, grad_norm, rate);
      log.flush();
      window_frames = 0;
      window_start = now;
    }
    if (step % options.checkpoint_every == 0 || step == options.steps) {
      save(step);
      saved_at = step;
    }
    if (evaluate && options.eval_every > 0 && (step % options.eval_every == 0 || step == options.steps)) {
      at::NoGradGuard no_grad;
      const auto metrics = evaluate(model);
      const bool new_eval = !fs::exists(eval_path);
      std::ofstream ev(eval_path, std::ios::app);
      if (eval_columns.empty())
        for (const auto& kv : metrics) eval_columns.push_back(kv.first);
      if (new_eval) {
        ev << "step";
        for (const auto& c : eval_columns) ev << ',' << c;
        ev << '\n';
      }
      ev << step;
      std::string line;
      for (const auto& c : eval_columns) {
        const auto it = metrics.find(c);
        ev << ',' << (it == metrics.end() ? std::string() : Fmt(it->second));
        line += "  " + c + " " + (it == metrics.end() ? std::string("-") : Fmt(it->second));
      }
      ev << '\n';
      spdlog::info("evaluation at step {}:{}", step, line);
    }
  }
  if (saved_at != step) save(step);
  log.close();
  PlotTrainingLog(options.run_dir);
  result.last_step = step;
  result.finished = step >= options.steps;
  return result;
}

}  // namespace streamrecon::models
