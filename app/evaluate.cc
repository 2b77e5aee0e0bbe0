// Evaluation against ground truth (app/evaluate.h): the model over sequences with ground truth
// (synthetic, TUM RGB-D, 7-Scenes, RGB-D folders), scored for depth, camera poses and point clouds
// per sequence and averaged, with the frame rate and the cache size.
//
// Protocol: ground truth is brought to the model's resolution, not the other way round. Each
// model pixel (x, y) takes the ground-truth pixel nearest to its centre, (floor((x + 0.5) W / w),
// floor((y + 0.5) H / h)); its depth is compared with the predicted depth, and its unprojection
// with the dataset's own intrinsics (in the first ground-truth camera's frame) is the ground-truth
// point matched with the predicted world point of (x, y). Depth is scored twice: with per-frame
// median scaling and with one L1 scale per sequence. Poses: ATE and RPE after Sim(3) alignment of
// the camera centres. Point clouds: Acc / Comp / NC over pixels with valid ground truth, after
// the chosen alignment (Umeyama by default). A metric group that cannot be computed (no Open3D,
// degenerate predictions) is reported with its error instead of numbers.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/evaluate.h"
#include "app/stream_setup.h"
#include "app/common_options.h"
#include "core/atomic_file.h"
#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/ground_truth.h"
#include "datasets/metrics.h"
#include "datasets/preprocess.h"
#include "models/streaming_model.h"

namespace streamrecon::app {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json ToJson(const metrics::DepthMetrics& m) {
  return {{"abs_rel", m.abs_rel}, {"sq_rel", m.sq_rel},   {"rmse", m.rmse},
          {"log_rmse", m.log_rmse}, {"delta_1", m.delta_1}, {"delta_2", m.delta_2},
          {"delta_3", m.delta_3}, {"scale", m.scale},     {"pixels", m.pixels},
          {"pixels_measured", m.pixels_measured}};
}

json ToJson(const metrics::TrajectoryMetrics& m) {
  return {{"ate_rmse", m.ate_rmse},
          {"ate_mean", m.ate_mean},
          {"rpe_trans_rmse", m.rpe_translation_rmse},
          {"rpe_rot_rmse_deg", m.rpe_rotation_rmse_deg},
          {"rpe_trans_mean", m.rpe_translation_mean},
          {"rpe_rot_mean_deg", m.rpe_rotation_mean_deg},
          {"sim3_scale", m.alignment.scale},
          {"poses", m.poses}};
}

json ToJson(const metrics::CloudMetrics& m) {
  return {{"acc", m.accuracy},
          {"acc_median", m.accuracy_median},
          {"comp", m.completeness},
          {"comp_median", m.completeness_median},
          {"nc", m.normal_consistency},
          {"nc_acc", m.nc_accuracy},
          {"nc_comp", m.nc_completeness},
          {"sim3_scale", m.alignment.scale},
          {"icp_fitness", m.icp_fitness},
          {"predicted_points", m.predicted_points},
          {"gt_points", m.gt_points}};
}

// Runs compute() and returns its JSON, or {"error": what} with a warning when it throws Error.
template <typename Compute>
json Guarded(const std::string& sequence, const std::string& group, Compute compute) {
  try {
    return compute();
  } catch (const Error& e) {
    spdlog::warn("{}: {} metrics not computed: {}", sequence, group, e.what());
    return {{"error", e.what()}};
  }
}

const char* const kGroups[] = {"depth_median", "depth_l1", "pose", "cloud"};

// The mean of every numeric field over the sequences where it is present, group by group.
json MeanOver(const json& sequences) {
  json mean = json::object();
  for (const char* key : {"frames", "fps", "cache_bytes"}) {
    double sum = 0;
    for (const json& s : sequences) sum += s.at(key).get<double>();
    mean[key] = sum / static_cast<double>(sequences.size());
  }
  for (const char* group : kGroups) {
    std::map<std::string, std::pair<double, int>> sums;
    for (const json& s : sequences) {
      for (const auto& [field, value] : s.at(group).items()) {
        if (value.is_number()) {
          sums[field].first += value.get<double>();
          sums[field].second += 1;
        }
      }
    }
    json fields = json::object();
    for (const auto& [field, sum] : sums) fields[field] = sum.first / sum.second;
    if (fields.empty()) fields["error"] = "no sequence has these metrics";
    mean[group] = fields;
  }
  return mean;
}

std::string Cell(const json& group, const char* field, int decimals) {
  if (!group.contains(field) || !group.at(field).is_number()) return "n/a";
  std::ostringstream text;
  text.setf(std::ios::fixed);
  text.precision(decimals);
  text << group.at(field).get<double>();
  return text.str();
}

// "path (SHA-256 abcd1234...)" or "random weights (seed N)" from the report's model record.
std::string ModelLine(const json& model) {
  if (model.contains("random_seed")) return "random weights (seed " + model.at("random_seed").dump() + ")";
  std::string line = "`" + model.value("path", std::string("?")) + "`";
  if (model.contains("sha256") && model.at("sha256").is_string()) line += " (SHA-256 " + model.at("sha256").get<std::string>().substr(0, 12) + "...)";
  return line;
}

std::string MarkdownReport(const json& report) {
  struct Column {
    const char* title;
    const char* field;
    int decimals;
  };
  const json& sequences = report.at("sequences");
  const double max_depth = report.at("protocol").at("max_depth").get<double>();
  std::ostringstream md;
  auto table = [&](const std::string& heading, const char* group,
                   const std::vector<Column>& columns) {
    md << "\n## " << heading << "\n\n| sequence |";
    for (const Column& c : columns) md << ' ' << c.title << " |";
    md << "\n|---|";
    for (size_t k = 0; k < columns.size(); ++k) md << "---:|";
    md << '\n';
    auto row = [&](const std::string& name, const json& values) {
      md << "| " << name << " |";
      for (const Column& c : columns) md << ' ' << Cell(values, c.field, c.decimals) << " |";
      md << '\n';
    };
    for (const json& s : sequences) row(s.at("name").get<std::string>(), group ? s.at(group) : s);
    row("**mean**", group ? report.at("mean").at(group) : report.at("mean"));
  };
  md << "# StreamRecon evaluation\n\n"
     << "- dataset: `" << report.at("dataset").get<std::string>() << "`\n"
     << "- model: " << ModelLine(report.at("model")) << ", input "
     << report.at("model_input")[0] << "x" << report.at("model_input")[1] << ", cache policy "
     << report.at("cache").at("policy").get<std::string>() << "\n"
     << "- ground truth resized to the model resolution (nearest neighbour); valid where the "
     << "ground-truth depth is in (" << report.at("protocol").at("min_depth").get<double>() << ", "
     << (max_depth > 0 ? std::to_string(max_depth) : std::string("inf")) << ") m\n";
  table("Run", nullptr, {{"frames", "frames", 0}, {"fps", "fps", 2}, {"cache bytes", "cache_bytes", 0}});
  const std::vector<Column> depth = {{"AbsRel", "abs_rel", 4}, {"SqRel", "sq_rel", 4},
                                     {"RMSE", "rmse", 4},      {"log RMSE", "log_rmse", 4},
                                     {"δ<1.25", "delta_1", 4}, {"δ<1.25²", "delta_2", 4},
                                     {"δ<1.25³", "delta_3", 4}, {"scale", "scale", 4}};
  table("Depth, per-frame median scale", "depth_median", depth);
  table("Depth, one L1 scale per sequence", "depth_l1", depth);
  table("Camera poses (after Sim(3) alignment)", "pose",
        {{"ATE RMSE", "ate_rmse", 4}, {"path length", "path_length", 3}, {"ATE % of path", "ate_percent_of_path", 2}, {"RPE trans RMSE", "rpe_trans_rmse", 4},
         {"RPE rot RMSE (deg)", "rpe_rot_rmse_deg", 3}, {"Sim(3) scale", "sim3_scale", 4}});
  table("Point cloud (" + report.at("protocol").at("cloud_alignment").get<std::string>() +
            (report.at("protocol").at("icp").get<bool>() ? " + ICP" : "") + " alignment)",
        "cloud",
        {{"Acc", "acc", 4}, {"Acc med", "acc_median", 4}, {"Comp", "comp", 4},
         {"Comp med", "comp_median", 4}, {"NC", "nc", 4}});
  std::string errors;
  for (const json& s : sequences) {
    for (const char* group : kGroups) {
      if (s.at(group).contains("error")) {
        errors += "- " + s.at("name").get<std::string>() + ", " + group + ": " +
                  s.at(group).at("error").get<std::string>() + "\n";
      }
    }
  }
  if (!errors.empty()) md << "\n## Not computed\n\n" << errors;
  return md.str();
}

// Everything gathered while the model runs over one sequence.
struct SequenceRecord {
  std::vector<Rigid3> predicted_poses, gt_poses;   // world_from_cam, world = first camera
  std::vector<float> predicted_points, gt_points;  // [N, 3] pairs, valid ground truth only
  // Per frame: depth AbsRel and delta < 1.25 after the frame's median scale (NaN without valid
  // pixels), model milliseconds and cache bytes after the frame.
  std::vector<double> frame_abs_rel, frame_delta1, frame_ms;
  std::vector<int64_t> frame_cache_bytes;
};

// frames_<name>.csv: accuracy against frame index (long streams show drift here). The camera-centre
// error is after the whole sequence's Sim(3) alignment (empty when it could not be computed).
void WriteFrameCsv(const fs::path& path, const SequenceRecord& r, const std::optional<geometry::Sim3>& alignment) {
  std::ostringstream csv;
  csv << "frame,depth_abs_rel,depth_delta1,center_error,model_ms,cache_bytes\n";
  for (size_t i = 0; i < r.frame_abs_rel.size(); ++i) {
    csv << i << ',' << r.frame_abs_rel[i] << ',' << r.frame_delta1[i] << ',';
    if (alignment) {
      const auto c = r.predicted_poses[i].t, g = r.gt_poses[i].t;
      const auto& R = alignment->T.R;
      double e2 = 0;
      for (int a = 0; a < 3; ++a) {
        const double v = alignment->scale * (R[a * 3] * c[0] + R[a * 3 + 1] * c[1] + R[a * 3 + 2] * c[2]) + alignment->T.t[a] - g[a];
        e2 += v * v;
      }
      csv << std::sqrt(e2);
    }
    csv << ',' << r.frame_ms[i] << ',' << r.frame_cache_bytes[i] << '\n';
  }
  WriteTextAtomically(path, csv.str());
}

}  // namespace

std::string EvalMarkdownReport(const json& report) { return MarkdownReport(report); }

namespace {

// The metric options the evaluation options ask for, checked (OptionError naming the flag).
struct MetricOptions {
  metrics::CloudMetricsOptions cloud;
  metrics::DepthMetricsOptions depth_median, depth_l1;
  bool track = false;  // --poses resolved
};
MetricOptions CheckedMetricOptions(const EvalOptions& args) {
  MetricOptions m;
  m.cloud.alignment = metrics::ParseCloudAlignment(args.cloud_align);
  m.cloud.icp = args.icp;
  m.cloud.icp_max_distance = args.icp_max_distance;
  m.cloud.max_points = args.max_points;
  m.cloud.Check();
  m.depth_median.min_depth = m.depth_l1.min_depth = args.min_depth;
  m.depth_median.max_depth = m.depth_l1.max_depth = args.max_depth;
  m.depth_median.alignment = metrics::DepthAlignment::kMedianPerFrame;
  m.depth_l1.alignment = metrics::DepthAlignment::kL1PerSequence;
  m.depth_median.Check();
  if (args.cloud_stride < 1) throw OptionError("--cloud-stride: expected >= 1, got " + std::to_string(args.cloud_stride));
  if (args.every < 1) throw OptionError("--every: expected >= 1, got " + std::to_string(args.every));
  if (args.frames == 0 || args.frames < -1) throw OptionError("--frames: must be positive, got " + std::to_string(args.frames));
  m.track = ResolvePoses(args.poses);
  return m;
}

}  // namespace

std::vector<std::string> CheckEvalOptions(const EvalOptions& args) {
  CheckedMetricOptions(args);
  return datasets::FindSequences(args.dataset);
}

json Evaluate(models::StreamingModel& model, const models::LoadedModel& loaded, WeightsRecord& weights_record,
              const ModelArgs& model_args, const CacheArgs& cache, const EvalOptions& args, const fs::path& out_dir,
              const std::function<bool()>& should_stop) {
  const MetricOptions metric_options = CheckedMetricOptions(args);
  const metrics::CloudMetricsOptions& cloud_options = metric_options.cloud;
  const metrics::DepthMetricsOptions& depth_median = metric_options.depth_median;
  const metrics::DepthMetricsOptions& depth_l1 = metric_options.depth_l1;
  const std::vector<std::string> sequences = datasets::FindSequences(args.dataset);
  auto Interrupted = [&] { return should_stop && should_stop(); };
  const bool write = !out_dir.empty();
  const datasets::PreprocessOptions pre = ParseSize(args.size, loaded.config.patch_size, loaded.config.img_size);

  datasets::DatasetOptions dataset_options;
  dataset_options.every = args.every;
  dataset_options.on_note = [](const std::string& note) { spdlog::warn("{}", note); };
  dataset_options.synthetic.seed = args.synthetic_seed;
  if (datasets::DetectLayout(sequences.front()) == datasets::DatasetLayout::kSynthetic) {
    // Rendered directly at the model size (4:3 unless --size gives both), like `run`.
    std::tie(dataset_options.synthetic.width, dataset_options.synthetic.height) =
        datasets::ModelInputSize(640, 480, pre);
    dataset_options.synthetic.frames = args.frames > 0 ? static_cast<int>(args.frames) : 24;
  } else {
    dataset_options.max_frames = args.frames;
  }
  spdlog::info("evaluating {} sequence(s) from {}", sequences.size(), args.dataset);
  std::unique_ptr<datasets::GroundTruthSource> first_source = datasets::OpenDataset(sequences.front(), dataset_options);
  if (Interrupted()) return {{"interrupted", true}, {"sequences", json::array()}};  // before anything is removed
  if (write) {
    CheckOutputFolder(out_dir);
    // A rerun into the same folder leaves nothing of the earlier run behind (other files stay).
    std::vector<std::string> earlier{"metrics.json", "metrics.md"};
    std::error_code listing_error;
    for (const auto& entry : fs::directory_iterator(out_dir, listing_error)) {
      const std::string file = entry.path().filename().string();
      if (file.rfind("frames_", 0) == 0 && entry.path().extension() == ".csv") earlier.push_back(file);
    }
    if (const int removed = RemoveEarlierOutputs(out_dir, earlier))
      spdlog::info("removed {} output(s) of an earlier run from {}", removed, out_dir.string());
  }

  json sequence_reports = json::array();
  int model_w = 0, model_h = 0;
  std::optional<TrackedPoses> tracked;
  if (metric_options.track) tracked.emplace();
  for (size_t s = 0; s < sequences.size() && !Interrupted(); ++s) {
    std::unique_ptr<datasets::GroundTruthSource> source =
        s == 0 ? std::move(first_source) : datasets::OpenDataset(sequences[s], dataset_options);
    const std::string name = source->name();
    spdlog::info("sequence {}/{}: {}", s + 1, sequences.size(), source->Describe());
    model.Reset();
    if (tracked) tracked->Reset();
    metrics::DepthEvaluator median_evaluator(depth_median), l1_evaluator(depth_l1);
    std::string depth_error;  // a frame the evaluators refused
    SequenceRecord record;
    Rigid3 first_from_world;  // inverse of the first ground-truth camera
    double total_ms = 0;
    int64_t peak_cache = 0, n = 0;

    for (std::optional<datasets::GroundTruthFrame> gt; !Interrupted() && (gt = source->Next());) {
      const RgbImage& original = gt->frame.image;
      if (model_w == 0) {  // fixed by the first frame for every sequence, as in `run`
        std::tie(model_w, model_h) = datasets::ModelInputSize(original.width, original.height, pre);
        spdlog::info("model input {}x{} (from {}x{})", model_w, model_h, original.width, original.height);
      }
      const int w = model_w, h = model_h;
      datasets::PreprocessOptions fixed = pre;
      fixed.target_width = w;
      fixed.target_height = h;
      const RgbImage image = datasets::ResizeForModel(original, fixed);

      const auto t0 = std::chrono::steady_clock::now();
      const models::StepOutput step = model.Step(models::ImageToTensor(image));
      FramePrediction pred = models::ToFramePrediction(step, image, n);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (tracked) tracked->Track(pred);  // its time is reported apart (camera_poses.track_ms_mean)
      total_ms += ms;
      peak_cache = std::max(peak_cache, model.CacheBytes());

      // Ground truth at the model's pixels (nearest source pixel), in the first camera's frame.
      if (n == 0) first_from_world = geometry::Inverse(gt->world_from_cam);
      const Rigid3 first_from_cam = geometry::Compose(first_from_world, gt->world_from_cam);
      const Intrinsics& k = gt->intrinsics;
      std::vector<float> gt_depth(static_cast<size_t>(w) * h);
      for (int y = 0; y < h; ++y) {
        const int sy = std::min(original.height - 1, static_cast<int>((y + 0.5) * original.height / h));
        for (int x = 0; x < w; ++x) {
          const int sx = std::min(original.width - 1, static_cast<int>((x + 0.5) * original.width / w));
          const float z = gt->depth[static_cast<size_t>(sy) * original.width + sx];
          gt_depth[static_cast<size_t>(y) * w + x] = z;
          const bool valid = std::isfinite(z) && z > args.min_depth && (args.max_depth <= 0 || z < args.max_depth);
          if (!valid || y % args.cloud_stride != 0 || x % args.cloud_stride != 0) continue;
          const std::array<double, 3> p =
              geometry::Apply(first_from_cam, {(sx - k.cx) * z / k.fx, (sy - k.cy) * z / k.fy, static_cast<double>(z)});
          const float* q = &pred.world_points[(static_cast<size_t>(y) * w + x) * 3];
          record.predicted_points.insert(record.predicted_points.end(), q, q + 3);
          for (double v : p) record.gt_points.push_back(static_cast<float>(v));
        }
      }
      {
        metrics::DepthEvaluator frame_evaluator(depth_median);
        double abs_rel = std::nan(""), delta1 = std::nan("");
        try {
          frame_evaluator.AddFrame(pred.depth, gt_depth);
          const metrics::DepthMetrics m = frame_evaluator.Compute();
          abs_rel = m.abs_rel;
          delta1 = m.delta_1;
        } catch (const Error&) {
          // no valid pixel in this frame: NaN in frames.csv
        }
        record.frame_abs_rel.push_back(abs_rel);
        record.frame_delta1.push_back(delta1);
        record.frame_ms.push_back(ms);
        record.frame_cache_bytes.push_back(model.CacheBytes());
      }
      if (depth_error.empty()) {
        try {
          median_evaluator.AddFrame(pred.depth, gt_depth);
          l1_evaluator.AddFrame(pred.depth, gt_depth);
        } catch (const Error& e) {
          depth_error = e.what();
        }
      }
      record.predicted_poses.push_back(geometry::Inverse(geometry::PoseEncodingToExtrinsics(pred.pose_enc)));
      record.gt_poses.push_back(first_from_cam);
      ++n;
      spdlog::info("{} frame {}/{} {}: {:.0f} ms, {:.2f} fps, cache {:.2f} MiB", name, n, source->size(),
                   gt->frame.name, ms, 1000.0 * n / total_ms, model.CacheBytes() / 1048576.0);
    }
    if (n == 0 && Interrupted()) break;
    if (n == 0) throw Error("no frames were read from " + source->Describe());

    json report = {{"name", name},
                   {"source", sequences[s]},
                   {"layout", datasets::LayoutName(source->layout())},
                   {"frames", n},
                   {"fps", 1000.0 * n / total_ms},
                   {"model_ms_mean", total_ms / n},
                   {"cache_bytes", model.CacheBytes()},
                   {"cache_bytes_peak", peak_cache}};
    auto depth_group = [&](const metrics::DepthEvaluator& evaluator) {
      return Guarded(name, "depth", [&] {
        if (!depth_error.empty()) throw Error(depth_error);
        return ToJson(evaluator.Compute());
      });
    };
    report["depth_median"] = depth_group(median_evaluator);
    report["depth_l1"] = depth_group(l1_evaluator);
    std::optional<geometry::Sim3> alignment;
    report["pose"] = Guarded(name, "pose", [&] {
      const metrics::TrajectoryMetrics tm = metrics::ComputeTrajectoryMetrics(record.predicted_poses, record.gt_poses, {});
      alignment = tm.alignment;
      json pose = ToJson(tm);
      // The ground-truth path length (sum of camera-centre steps) and ATE as a share of it.
      double length = 0;
      for (size_t i = 1; i < record.gt_poses.size(); ++i) {
        const auto& a = record.gt_poses[i - 1].t;
        const auto& b = record.gt_poses[i].t;
        length += std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
      }
      pose["path_length"] = length;
      if (length > 1e-9) pose["ate_percent_of_path"] = 100.0 * pose["ate_rmse"].get<double>() / length;
      return pose;
    });
    report["camera_poses"] = tracked ? tracked->ToJson() : json{{"source", "head"}};
    if (tracked) spdlog::info("{}: poses tracked, {}", name, tracked->Summary());
    std::string csv_name = "frames_" + name + ".csv";
    for (char& c : csv_name)
      if (c == '/' || c == ' ') c = '_';
    if (write) {
      WriteFrameCsv(out_dir / csv_name, record, alignment);
      report["frames_csv"] = csv_name;
    }
    report["cloud"] = Guarded(name, "point-cloud", [&] {
      return ToJson(metrics::ComputeCloudMetrics(record.predicted_points, record.gt_points, cloud_options));
    });
    spdlog::info("{}: depth AbsRel {} (median) {} (L1), delta<1.25 {} (L1), ATE {} m = {}% of the {} m path, Acc {}, Comp {}, NC {}", name,
                 Cell(report["depth_median"], "abs_rel", 4), Cell(report["depth_l1"], "abs_rel", 4), Cell(report["depth_l1"], "delta_1", 4),
                 Cell(report["pose"], "ate_rmse", 4), Cell(report["pose"], "ate_percent_of_path", 1), Cell(report["pose"], "path_length", 2),
                 Cell(report["cloud"], "acc", 4),
                 Cell(report["cloud"], "comp", 4), Cell(report["cloud"], "nc", 4));
    sequence_reports.push_back(std::move(report));
  }

  const bool interrupted = Interrupted();
  if (sequence_reports.empty()) return {{"interrupted", true}, {"sequences", json::array()}};
  if (interrupted) spdlog::warn("interrupted: writing the metrics of the {} sequence(s) done (the last one up to its frame in flight)",
                                sequence_reports.size());
  json report = {
      {"dataset", args.dataset},
      {"interrupted", interrupted},
      {"model", weights_record.Get()},
      {"model_options", model_args.ToJson()},
      {"kernel_options", cache.KernelJson()},
      {"config", loaded.config.ToJson()},
      {"model_input", {model_w, model_h}},
      {"cache", {{"policy", cache.policy}, {"format", cache.format}, {"budget", cache.budget}, {"cache_tokens", cache.cache_tokens}, {"pool", cache.pool}}},
      {"protocol",
       {{"gt_resize", "ground truth to the model resolution, nearest neighbour"},
        {"min_depth", args.min_depth},
        {"max_depth", args.max_depth},
        {"depth_alignments", {"median (per frame)", "l1 (one scale per sequence, IRLS)"}},
        {"pose_alignment", "sim3 (Umeyama on camera centres)"},
        {"poses", tracked ? "tracked (the camera head's motion corrected by SIFT + PnP on the predicted depth)" : "the camera head's"},
        {"cloud_alignment", args.cloud_align},
        {"icp", args.icp},
        {"icp_max_distance", args.icp_max_distance},
        {"max_points", args.max_points},
        {"cloud_stride", args.cloud_stride}}},
      {"sequences", sequence_reports},
  };
  report["mean"] = MeanOver(sequence_reports);
  if (write) {
    WriteTextAtomically(out_dir / "metrics.json", report.dump(2) + "\n");
    WriteTextAtomically(out_dir / "metrics.md", MarkdownReport(report));
    spdlog::info("wrote metrics of {} sequence(s) to {}: metrics.json, metrics.md", sequence_reports.size(),
                 out_dir.string());
  }
  return report;
}

}  // namespace streamrecon::app
