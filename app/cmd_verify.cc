// `streamrecon verify`: streams the frames of a reference dump through the model and compares
// every output, frame by frame, with relative L2 errors; non-zero exit when any exceeds --tol.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include <cstdio>

#include "app/commands.h"
#include "app/common_options.h"
#include "core/errors.h"
#include "models/streaming_model.h"

namespace streamrecon::app {
namespace {

struct VerifyArgs {
  ModelArgs model;
  CacheArgs cache;
  std::string reference;
  double tol = -1;  // < 0: 1e-6 for float64, 1e-4 for float32 (model.md), 3e-2 for bfloat16
};

double RelativeL2(const at::Tensor& ours, const at::Tensor& ref) {
  const at::Tensor a = ours.to(at::kCPU, at::kDouble).reshape({-1});
  const at::Tensor b = ref.to(at::kCPU, at::kDouble).reshape({-1});
  const double denom = b.norm().item<double>();
  const double diff = (a - b).norm().item<double>();
  return denom > 0 ? diff / denom : diff;
}

int RunVerify(const VerifyArgs& args) {
  // The reference first (before loading a model): a missing dump is named as such.
  if (!std::filesystem::exists(args.reference)) throw FileError("reference dump not found: " + args.reference + " (--reference)");
  if (std::filesystem::is_directory(args.reference))
    throw FileError("--reference " + args.reference + " is a folder; expected a .safetensors reference dump");
  const double tol = args.tol >= 0 ? args.tol : args.model.dtype == "float64" ? 1e-6 : args.model.dtype == "bfloat16" ? 3e-2 : 1e-4;
  const OpenedModel opened = OpenModel(args.model, &args.cache, /*allow_default=*/false);
  models::StreamingModel& model = *opened.model;

  const models::SafetensorsFile ref = models::ReadSafetensors(args.reference);
  auto get = [&](const std::string& key) -> const at::Tensor& {
    auto it = ref.tensors.find(key);
    if (it == ref.tensors.end()) throw FileError(args.reference + ": missing key '" + key + "'");
    return it->second;
  };
  if (!ref.tensors.count("frame0.image")) throw FileError(args.reference + ": no 'frame0.image': not a reference dump");

  std::printf("%-6s %-18s %12s %s\n", "frame", "output", "rel_L2", "status");
  double worst = 0.0;
  int failures = 0;
  int frames = 0;
  for (int i = 0; ref.tensors.count("frame" + std::to_string(i) + ".image"); ++i, ++frames) {
    const std::string f = "frame" + std::to_string(i) + ".";
    const models::StepOutput out = model.Step(get(f + "image"));
    const std::pair<const char*, const at::Tensor*> outputs[] = {
        {"pose_enc", &out.pose_enc},         {"depth", &out.depth},
        {"depth_conf", &out.depth_conf},     {"world_points", &out.world_points},
        {"world_points_conf", &out.world_points_conf}, {"tokens_last", &out.tokens_last},
    };
    for (const auto& [name, tensor] : outputs) {
      const at::Tensor& expected = get(f + name);
      if (tensor->sizes() != expected.sizes())
        throw Error(std::string("frame ") + std::to_string(i) + " " + name + ": shape " + c10::str(tensor->sizes()) +
                    " differs from the reference " + c10::str(expected.sizes()));
      const double err = RelativeL2(*tensor, expected);
      const bool ok = err <= tol;
      worst = std::max(worst, err);
      failures += ok ? 0 : 1;
      std::printf("%-6d %-18s %12.3e %s\n", i, name, err, ok ? "ok" : "FAIL");
    }
    if (ref.tensors.count(f + "kv_len_layer0")) {
      const int64_t expected = static_cast<int64_t>(std::llround(get(f + "kv_len_layer0").item<double>()));
      const int64_t ours = model.CachedTokens(0);
      const bool ok = ours == expected;
      failures += ok ? 0 : 1;
      std::printf("%-6d %-18s %12lld %s (reference %lld)\n", i, "kv_len_layer0", static_cast<long long>(ours), ok ? "ok" : "FAIL",
                  static_cast<long long>(expected));
    }
  }
  std::printf("%d frames, worst relative L2 %.3e, tolerance %.1e (%s): %s\n", frames, worst, tol, args.model.dtype.c_str(),
              failures ? "FAILED" : "PASSED");
  return failures ? 1 : 0;
}

}  // namespace

Runner AddVerifyCommand(CLI::App& parent) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* cmd = parent.add_subcommand("verify", "Check the model against a reference dump (per-frame relative L2 errors)");
  args->model.Add(*cmd);
  args->cache.Add(*cmd);
  cmd->add_option("--reference,-r", args->reference, "Reference dump (.safetensors with frame{i}.image and outputs)")->required();
  cmd->add_option("--tol", args->tol, "Relative L2 tolerance (default 1e-6 for float64, 1e-4 for float32, as model.md bounds the reference's own storage; 3e-2 for bfloat16)");
  return [cmd, args]() { return cmd->parsed() ? RunVerify(*args) : -1; };
}

}  // namespace streamrecon::app
