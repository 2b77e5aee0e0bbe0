// One input reconstructed headless into an output folder: what `run` does once and `batch` does per
// manifest item, with the model opened by the caller (so a batch loads it once).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "app/common_options.h"
#include "core/point_cloud.h"
#include "models/streaming_model.h"

namespace streamrecon::app {

struct RunArgs {
  ModelArgs model;
  CacheArgs cache;
  InputArgs in;              // --input / --synthetic / --scene / --size / --max-frames / --every
  std::string out = "out";
  PointCloudOptions cloud;
  bool depth_maps = true;
  bool points = true;   // points.ply and preview.png (off: cameras and depth only)
  bool colmap = false;  // also write a COLMAP text model (colmap/images, colmap/sparse/0)
  bool raw_outputs = false;  // also write raw/frame_NNNNNN.safetensors (the model's arrays, unrounded)
  int64_t max_points = 2000000;  // the accumulated cloud's bound (0 = none)
  std::string poses = "auto";    // --poses: auto | tracked | head (AddPosesOption)

  // The output options (poses, cloud, depth maps, COLMAP), shared by run and batch.
  void AddOutputOptions(CLI::App& cmd);
};

struct ReconstructResult {
  int64_t frames = 0;
  size_t points = 0;
  double model_ms_mean = 0, wall_seconds = 0;
  bool interrupted = false;
};

// Streams args.in through `model` (reset first) and writes points.ply, preview.png,
// trajectory.txt, cameras.json, depth/, run.json (and colmap/) into out_dir, each file atomically.
// Throws Error when no frame could be read; an interrupt (Ctrl-C) ends the input early and the
// outputs of the frames done are written (result.interrupted).
ReconstructResult Reconstruct(const RunArgs& args, const std::shared_ptr<models::StreamingModel>& model,
                              const models::LoadedModel& loaded, WeightsRecord& weights, const std::filesystem::path& out_dir);

// The checks that need no model: one input, the output folder usable, the writers present.
void CheckRunArgs(const RunArgs& args, const std::filesystem::path& out_dir);

}  // namespace streamrecon::app
