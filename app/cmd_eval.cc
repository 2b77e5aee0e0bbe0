// `streamrecon eval`: runs the model over sequences with ground truth and writes metrics.json and
// metrics.md (app/evaluate.h has the protocol).
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "app/common_options.h"
#include "app/evaluate.h"
#include "core/atomic_file.h"
#include "core/interrupt.h"

namespace streamrecon::app {
namespace {

struct EvalArgs {
  ModelArgs model;
  CacheArgs cache;
  EvalOptions eval;
  std::string out = "eval";
};

int RunEval(const EvalArgs& args) {
  const std::filesystem::path out_dir(args.out);
  CheckEvalOptions(args.eval);  // before the weights load
  CheckOutputFolder(out_dir);
  const OpenedModel opened = OpenModel(args.model, &args.cache);
  WeightsRecord weights(opened.loaded, args.model.random_seed);
  // Ctrl-C / SIGTERM: the sequence in progress ends at the frame in flight, its metrics and those of
  // the sequences done are written, marked interrupted (exit 130). A second signal aborts at once.
  InstallInterruptHandler();
  const nlohmann::json report = Evaluate(*opened.model, opened.loaded, weights, args.model, args.cache, args.eval, out_dir, Interrupted);
  if (report.at("sequences").empty()) {
    spdlog::warn("interrupted before the first frame was done: nothing written");
    return 130;
  }
  return report.value("interrupted", false) ? 130 : 0;
}

}  // namespace

Runner AddEvalCommand(CLI::App& parent) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = parent.add_subcommand("eval", "Evaluate depth, poses and point clouds against ground truth");
  args->model.Add(*cmd);
  args->cache.Add(*cmd);
  cmd->add_option("--dataset,-d", args->eval.dataset,
                  "synthetic[:walk|:orbit|:pan][:outdoor], or a TUM RGB-D / 7-Scenes / RGB-D folder (or a folder of sequences)")
      ->capture_default_str();
  cmd->add_option("--frames,-n", args->eval.frames, "Frames per sequence (synthetic: frames rendered, default 24)")
      ->check(kPositive);
  cmd->add_option("--every", args->eval.every, "Use every K-th frame of each sequence")->check(kPositive);
  cmd->add_option("--scene-seed", args->eval.synthetic_seed, "Seed of the synthetic scene")->capture_default_str();
  cmd->add_option("--size", args->eval.size, "Model input size: W (height keeps the aspect) or WxH, multiples of 14 (default: the model's training width, 224 for the default model)");
  AddPosesOption(*cmd, args->eval.poses);
  cmd->add_option("--out,-o", args->out, "Output folder for metrics.json and metrics.md")->capture_default_str();
  cmd->add_option("--min-depth", args->eval.min_depth, "Ground-truth depth must exceed this (metres)")->capture_default_str();
  cmd->add_option("--max-depth", args->eval.max_depth, "Ground-truth depth must be below this (metres; 0 = no cap)")
      ->capture_default_str();
  cmd->add_option("--cloud-align", args->eval.cloud_align, "Point-cloud alignment before Acc/Comp/NC")
      ->check(CLI::IsMember({"none", "median", "umeyama"}))
      ->capture_default_str();
  cmd->add_flag("--icp", args->eval.icp, "Refine the point-cloud alignment with point-to-point ICP (Open3D)");
  cmd->add_option("--icp-threshold", args->eval.icp_max_distance, "ICP correspondence distance (metres)")->capture_default_str();
  cmd->add_option("--max-points", args->eval.max_points, "Points per cloud for the nearest-neighbour metrics (0 = all)")
      ->check(kNonNegative)
      ->capture_default_str();
  cmd->add_option("--cloud-stride", args->eval.cloud_stride, "Pixel stride when collecting points")
      ->check(kPositive)
      ->capture_default_str();
  return [cmd, args]() { return cmd->parsed() ? RunEval(*args) : -1; };
}

}  // namespace streamrecon::app
