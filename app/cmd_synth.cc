// `streamrecon synth`: renders a synthetic sequence with its exact ground truth and saves it in
// the TUM RGB-D layout, for other tools or for `eval --dataset FOLDER`.
#include <spdlog/spdlog.h>

#include <string>

#include "app/commands.h"
#include "app/common_options.h"
#include "app/stream_setup.h"
#include "core/errors.h"
#include "datasets/ground_truth.h"
#include "datasets/synthetic.h"

namespace streamrecon::app {
namespace {

struct SynthArgs {
  std::string scene = "walk";
  int frames = 60;
  std::string size = "518x392";
  uint64_t seed = 0;
  double fov = 60.0;
  std::string out;
};

int RunSynth(const SynthArgs& args) {
  datasets::DatasetOptions options;
  datasets::SyntheticOptions& scene = options.synthetic;
  scene.frames = args.frames;
  scene.seed = args.seed;
  scene.fov_x_deg = args.fov;
  if (!datasets::ParsePixelSize(args.size, &scene.width, &scene.height) || scene.height == 0)
    throw OptionError("--size '" + args.size + "': expected WIDTHxHEIGHT in pixels, e.g. 518x392");
  const std::string spec = "synthetic:" + args.scene;
  std::unique_ptr<datasets::GroundTruthSource> source = datasets::OpenDataset(spec, options);
  spdlog::info("rendering {} into {}", source->Describe(), args.out);
  datasets::TumDatasetWriter writer(args.out);
  while (std::optional<datasets::GroundTruthFrame> frame = source->Next()) {
    writer.Add(*frame);
    spdlog::info("frame {}/{}", writer.frames(), source->size());
  }
  writer.Finish();
  if (writer.clipped_depths() > 0)
    spdlog::warn("{} depth pixels lie beyond the 13.107 m that TUM's 16-bit depth PNGs (5000 per metre) hold; they are stored as "
                 "invalid (0)", writer.clipped_depths());
  spdlog::info("wrote {} frames to {}: rgb/, depth/, rgb.txt, depth.txt, groundtruth.txt, intrinsics.txt", writer.frames(), args.out);
  return 0;
}

}  // namespace

Runner AddSynthCommand(CLI::App& parent) {
  auto args = std::make_shared<SynthArgs>();
  CLI::App* cmd = parent.add_subcommand("synth", "Render a synthetic sequence with exact ground truth into a TUM RGB-D folder");
  cmd->add_option("--scene", args->scene, "walk, orbit or pan, optionally with :outdoor (an open square instead of a room)")
      ->capture_default_str();
  cmd->add_option("--frames", args->frames, "Number of frames")->check(kPositive)->capture_default_str();
  cmd->add_option("--size", args->size, "Image size WIDTHxHEIGHT")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Scene seed (room, objects, textures, start of the trajectory)")->capture_default_str();
  cmd->add_option("--fov", args->fov, "Horizontal field of view in degrees")->capture_default_str();
  cmd->add_option("--out,-o", args->out, "Output folder")->required();
  return [cmd, args]() { return cmd->parsed() ? RunSynth(*args) : -1; };
}

}  // namespace streamrecon::app
