// Evaluation against ground truth, shared by `streamrecon eval` and the Python module's
// evaluate(): the model runs over every sequence of a dataset (synthetic scenes, TUM RGB-D,
// 7-Scenes, RGB-D folders) and the depth, camera and point-cloud metrics come back as JSON.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "app/common_options.h"
#include "models/streaming_model.h"

namespace streamrecon::app {

struct EvalOptions {
  std::string dataset = "synthetic";  // "synthetic[:walk|:orbit|:pan][:outdoor]" or a dataset folder
  int64_t frames = -1;                // frames per sequence (synthetic: rendered, default 24)
  int every = 1;                      // take every K-th frame
  uint64_t synthetic_seed = 0;        // synthetic scene seed
  std::string size;                   // "W" or "WxH"; default: the model's training width
  double min_depth = 1e-3;            // valid ground-truth depth range, metres (0 = no max)
  double max_depth = 0.0;
  std::string cloud_align = "umeyama";  // none | median | umeyama
  bool icp = false;
  double icp_max_distance = 0.1;
  int64_t max_points = 200000;  // per cloud, for the nearest-neighbour metrics (0 = all)
  int cloud_stride = 1;         // pixel stride in x and y when collecting points
  std::string poses = "auto";   // auto | tracked | head: where the cameras come from (AddPosesOption)
};

// The checks that need no model: the options (OptionError naming the flag) and the dataset's
// sequences (FileError when there are none). Returns the sequences.
std::vector<std::string> CheckEvalOptions(const EvalOptions& options);

// Runs `model` (reset before each sequence, and left holding the last one) over every sequence of
// options.dataset and returns the report, metrics.json's content: per sequence depth (median and
// L1 scaling), pose (ATE/RPE after Sim(3), path length) and cloud (Acc/Comp/NC) groups, their
// mean, the model record (with model_args' options and the cache's kernel choices) and the
// protocol. When out_dir is not empty, metrics.json, metrics.md and frames_<sequence>.csv are
// written there (atomically; earlier ones removed). should_stop is
// polled between frames: when it answers true, the sequence in progress ends there and the report
// says "interrupted". Throws like CheckEvalOptions, and Error when a sequence yields no frame.
nlohmann::json Evaluate(models::StreamingModel& model, const models::LoadedModel& loaded, WeightsRecord& weights,
                        const ModelArgs& model_args, const CacheArgs& cache, const EvalOptions& options, const std::filesystem::path& out_dir,
                        const std::function<bool()>& should_stop);

// metrics.md's content for a report of Evaluate.
std::string EvalMarkdownReport(const nlohmann::json& report);

}  // namespace streamrecon::app
