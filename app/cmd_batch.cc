// `streamrecon batch MANIFEST --out ROOT`: many inputs reconstructed headless by one process with
// the model loaded once. Each item is written into ROOT/.partial/NAME and renamed to ROOT/NAME when
// complete, so ROOT/NAME only ever holds a finished item: a rerun skips those and redoes partial
// ones. Every item's outcome is appended to ROOT/batch.jsonl (one line, one write); a failed item
// is recorded and the batch goes on. --shard I/N (or Slurm's array variables) picks this
// process's items; --sbatch writes a Slurm job-array script for the whole manifest instead.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/reconstruct.h"
#include "core/atomic_file.h"
#include "core/check.h"
#include "core/errors.h"
#include "core/interrupt.h"

namespace streamrecon::app {
namespace {

namespace fs = std::filesystem;

struct BatchItem {
  std::string name;
  InputArgs in;
  std::string where;  // "manifest.csv:4", for messages
};

struct Shard {
  int index = 0, count = 1;
  std::string Label() const { return std::to_string(index) + "/" + std::to_string(count); }
};

struct SlurmArgs {
  std::string script;       // where to write the job-array script (empty: run the batch)
  int tasks = 0;            // array tasks (0: one per item, at most 1000)
  int gpus = 1;             // GPUs per task (0: CPU only)
  std::string mem = "32G";  // memory per task
  std::string time = "04:00:00";
  std::string partition;
  int cpus = 8;
};

struct BatchArgs {
  RunArgs run;  // model, cache, output options and the frame options every item starts from
  std::string manifest;
  std::string shard;  // "I/N"; empty: Slurm's array variables, else the whole manifest
  SlurmArgs slurm;
};

// ---- the manifest ----

const std::set<std::string> kColumns = {"input", "name", "synthetic", "scene", "size", "every", "max_frames", "strict", "intrinsics"};

std::string ColumnList() {
  std::string s;
  for (const auto& c : kColumns) s += (s.empty() ? "" : ", ") + c;
  return s;
}

// One CSV line split into fields: commas separate, double quotes enclose a field ("" is a quote).
std::vector<std::string> SplitCsvLine(const std::string& line, const std::string& where) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') fields.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else fields.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  SR_CHECK(!quoted, FileError, where << ": a quoted field is not closed (a field may not span lines)");
  for (auto& f : fields) {  // surrounding blanks are not part of a value
    const size_t a = f.find_first_not_of(" \t"), b = f.find_last_not_of(" \t");
    f = a == std::string::npos ? std::string() : f.substr(a, b - a + 1);
  }
  return fields;
}

int64_t ParseInteger(const std::string& text, const std::string& what) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SR_CHECK(used == text.size() && !text.empty(), FileError, what << ": expected an integer, found '" << text << "'");
  return v;
}

// Applies one column's value to an item (empty values keep the batch's default).
void SetColumn(BatchItem& item, const std::string& column, const std::string& value) {
  if (value.empty()) return;
  const std::string what = item.where + ", column " + column;
  if (column == "input") item.in.input = value;
  else if (column == "name") item.name = value;
  else if (column == "synthetic") item.in.synthetic_frames = static_cast<int>(ParseInteger(value, what));
  else if (column == "scene") item.in.scene = value;
  else if (column == "size") item.in.size = value;
  else if (column == "every") item.in.every = static_cast<int>(ParseInteger(value, what));
  else if (column == "max_frames") item.in.max_frames = ParseInteger(value, what);
  else if (column == "strict") item.in.strict = value == "1" || value == "true" || value == "yes";
  else if (column == "intrinsics") item.in.intrinsics = value;
}

// A folder name for an item without one: the input's file or folder name.
std::string DefaultName(const BatchItem& item, size_t index) {
  if (!item.in.input.empty()) {
    fs::path p(item.in.input);
    if (!p.has_filename()) p = p.parent_path();
    const std::string stem = p.stem().string();
    if (!stem.empty() && stem.find_first_of("*?[") == std::string::npos) return stem;
  }
  return "item_" + std::to_string(index + 1);
}

std::vector<BatchItem> ReadManifest(const fs::path& path, const InputArgs& defaults) {
  std::ifstream in(path);
  SR_CHECK(in, FileError, "cannot read the manifest " << path.string() << ": expected a CSV file (header row) or JSON lines");
  std::vector<BatchItem> items;
  std::string line;
  std::vector<std::string> header;
  const std::string ext = path.extension().string();
  bool json = ext == ".jsonl" || ext == ".ndjson" || ext == ".json";
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = path.filename().string() + ":" + std::to_string(number);
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;  // blank lines and comments
    if (items.empty() && header.empty() && line[first] == '{') json = true;
    BatchItem item;
    item.in = defaults;
    item.in.input.clear();
    item.in.synthetic_frames = 0;
    item.where = where;
    if (json) {
      nlohmann::json row;
      try {
        row = nlohmann::json::parse(line);
      } catch (const std::exception& e) {
        throw FileError(where + ": expected one JSON object per line: " + e.what());
      }
      SR_CHECK(row.is_object(), FileError, where << ": expected a JSON object, found " << row.type_name());
      for (const auto& [key, value] : row.items()) {
        SR_CHECK(kColumns.count(key), FileError, where << ": unknown key '" << key << "' (expected " << ColumnList() << ")");
        SetColumn(item, key, value.is_string() ? value.get<std::string>() : value.dump());
      }
    } else if (header.empty()) {
      header = SplitCsvLine(line, where);
      for (const auto& column : header)
        SR_CHECK(kColumns.count(column), FileError,
                 where << ": unknown column '" << column << "' in the header (expected " << ColumnList() << ")");
      SR_CHECK(std::set<std::string>(header.begin(), header.end()).size() == header.size(), FileError,
               where << ": a column is named twice in the header");
      continue;
    } else {
      const std::vector<std::string> fields = SplitCsvLine(line, where);
      SR_CHECK(fields.size() == header.size(), FileError,
               where << ": expected " << header.size() << " fields as the header has, found " << fields.size());
      for (size_t c = 0; c < fields.size(); ++c) SetColumn(item, header[c], fields[c]);
    }
    SR_CHECK(item.in.input.empty() != (item.in.synthetic_frames <= 0), FileError,
             where << ": expected exactly one of an input or a synthetic frame count");
    if (item.name.empty()) item.name = DefaultName(item, items.size());
    SR_CHECK(item.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == std::string::npos &&
                 item.name[0] != '.',
             FileError, where << ": the name '" << item.name << "' is not a plain folder name (letters, digits, '.', '_', '-')");
    for (const BatchItem& earlier : items)
      SR_CHECK(earlier.name != item.name, FileError,
               where << ": the name '" << item.name << "' is taken by " << earlier.where << " (names are output folders)");
    items.push_back(item);
  }
  SR_CHECK(!items.empty(), FileError, "the manifest " << path.string() << " lists no items");
  return items;
}

// ---- shards ----

Shard ParseShard(const std::string& text) {
  Shard s;
  const size_t slash = text.find('/');
  SR_CHECK(slash != std::string::npos, OptionError, "--shard '" << text << "': expected I/N, e.g. 0/4");
  s.index = static_cast<int>(ParseInteger(text.substr(0, slash), "--shard index"));
  s.count = static_cast<int>(ParseInteger(text.substr(slash + 1), "--shard count"));
  SR_CHECK(s.count >= 1 && s.index >= 0 && s.index < s.count, OptionError,
           "--shard " << text << ": expected 0 <= I < N");
  return s;
}

// --shard, else a Slurm job array's task (task id - minimum id of task count), else everything.
Shard ChooseShard(const std::string& option) {
  if (!option.empty()) return ParseShard(option);
  const char* id = std::getenv("SLURM_ARRAY_TASK_ID");
  const char* count = std::getenv("SLURM_ARRAY_TASK_COUNT");
  if (!id || !count) return {};
  const char* min = std::getenv("SLURM_ARRAY_TASK_MIN");
  const int64_t index = ParseInteger(id, "SLURM_ARRAY_TASK_ID") - (min ? ParseInteger(min, "SLURM_ARRAY_TASK_MIN") : 0);
  return ParseShard(std::to_string(index) + "/" + count);
}

// ---- the record ----

std::string Now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// One line appended with one write (O_APPEND): lines of concurrent shards do not interleave.
void AppendRecord(const fs::path& path, nlohmann::json record) {
  record["time"] = Now();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  record["host"] = host;
  const std::string line = record.dump() + "\n";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  SR_CHECK(fd >= 0, FileError, "cannot append to " << path.string() << ": " << std::strerror(errno));
  const ssize_t written = ::write(fd, line.data(), line.size());
  ::close(fd);
  SR_CHECK(written == static_cast<ssize_t>(line.size()), FileError, "could not append a whole line to " << path.string());
}

// ---- Slurm ----

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The job-array script: one task per shard, each running this very command without --sbatch
// (its arguments as given), logs in ROOT/logs/.
void WriteSbatchScript(const BatchArgs& args, size_t items, const std::vector<std::string>& argv) {
  const int tasks = args.slurm.tasks > 0 ? args.slurm.tasks : static_cast<int>(std::min<size_t>(items, 1000));
  const fs::path root = fs::absolute(args.run.out);
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Written by `streamrecon batch --sbatch`: " << items << " item(s) of " << fs::absolute(args.manifest).string() << " in "
    << tasks << " array task(s).\n# Submit with: sbatch " << args.slurm.script << "\n"
    << "# A resubmission skips the finished items and redoes the partial ones.\n"
    << "#SBATCH --job-name=streamrecon-batch\n"
    << "#SBATCH --array=0-" << tasks - 1 << "\n"
    << "#SBATCH --ntasks=1\n"
    << "#SBATCH --cpus-per-task=" << args.slurm.cpus << "\n"
    << "#SBATCH --mem=" << args.slurm.mem << "\n"
    << "#SBATCH --time=" << args.slurm.time << "\n"
    << "#SBATCH --output=" << (root / "logs" / "%A_%a.out").string() << "\n";
  if (args.slurm.gpus > 0) s << "#SBATCH --gres=gpu:" << args.slurm.gpus << "\n";
  if (!args.slurm.partition.empty()) s << "#SBATCH --partition=" << args.slurm.partition << "\n";
  s << "set -euo pipefail\nexec";
  // This command's own arguments, without the --sbatch group (the task's shard comes from
  // SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT).
  static const std::set<std::string> kDrop = {"--sbatch", "--array-tasks", "--gpus-per-task", "--mem", "--time-limit", "--partition", "--cpus-per-task"};
  s << " " << Quote(fs::absolute(fs::path(argv[0])).string());
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string a = argv[i];
    const std::string flag = a.substr(0, a.find('='));
    if (kDrop.count(flag)) {
      if (a.find('=') == std::string::npos) ++i;  // its value is the next argument
      continue;
    }
    if (flag == "--shard") {
      if (a.find('=') == std::string::npos) ++i;
      continue;
    }
    s << " " << Quote(a);
  }
  s << "\n";
  WriteTextAtomically(args.slurm.script, s.str());
  fs::permissions(args.slurm.script, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec, fs::perm_options::add);
  fs::create_directories(root / "logs");
  spdlog::info("wrote {}: a job array of {} task(s) for {} item(s); submit it with: sbatch {}", args.slurm.script, tasks, items,
               args.slurm.script);
}

// ---- the batch ----

int RunBatch(const BatchArgs& args, const std::vector<std::string>& argv) {
  const std::vector<BatchItem> items = ReadManifest(args.manifest, args.run.in);
  ResolvePoses(args.run.poses);  // before the sbatch script or the model: a build without the tracker says so once
  if (!args.slurm.script.empty()) {
    WriteSbatchScript(args, items.size(), argv);
    return 0;
  }
  const Shard shard = ChooseShard(args.shard);
  std::vector<const BatchItem*> mine;
  for (size_t k = 0; k < items.size(); ++k)
    if (static_cast<int>(k % shard.count) == shard.index) mine.push_back(&items[k]);
  const fs::path root(args.run.out), partial = root / ".partial", record = root / "batch.jsonl";
  CheckOutputFolder(root);
  fs::create_directories(partial);
  spdlog::info("batch: {} item(s) in {}, {} for shard {}", items.size(), args.manifest, mine.size(), shard.Label());

  // The model once for every item (the weights are released after it is built).
  const OpenedModel opened = OpenModel(args.run.model, &args.run.cache);
  WeightsRecord weights(opened.loaded, args.run.model.random_seed);
  InstallInterruptHandler();
  int done = 0, skipped = 0, failed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < mine.size() && !Interrupted(); ++i) {
    const BatchItem& item = *mine[i];
    const fs::path final_dir = root / item.name, work_dir = partial / item.name;
    const std::string progress = "item " + std::to_string(i + 1) + "/" + std::to_string(mine.size()) + " '" + item.name + "'";
    nlohmann::json entry = {{"name", item.name}, {"input", item.in.input.empty() ? "synthetic" : item.in.input},
                            {"shard", shard.Label()}};
    if (fs::exists(final_dir / "run.json")) {
      spdlog::info("batch {}: done earlier, skipped", progress);
      ++skipped;
      continue;
    }
    const auto t_item = std::chrono::steady_clock::now();
    try {
      SR_CHECK(!fs::exists(final_dir), FileError,
               final_dir.string() << " exists but is not a finished item (no run.json): move it away to redo the item");
      if (fs::exists(work_dir)) {
        spdlog::info("batch {}: removing the partial output of an earlier attempt", progress);
        fs::remove_all(work_dir);
      }
      spdlog::info("batch {}: {}", progress, item.in.input.empty() ? "synthetic" : item.in.input);
      RunArgs run = args.run;
      run.in = item.in;
      CheckRunArgs(run, work_dir);
      const ReconstructResult result = Reconstruct(run, opened.model, opened.loaded, weights, work_dir);
      if (result.interrupted) {
        entry["status"] = "interrupted";
        AppendRecord(record, entry);
        break;
      }
      fs::rename(work_dir, final_dir);  // the finished item appears whole
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_item).count();
      entry.update(nlohmann::json{{"status", "done"}, {"frames", result.frames}, {"points", result.points}, {"seconds", seconds},
                    {"model_ms_mean", result.model_ms_mean}, {"fps", result.frames / std::max(seconds, 1e-9)}});
      AppendRecord(record, entry);
      ++done;
    } catch (const std::exception& e) {
      const std::string message = dynamic_cast<const OptionError*>(&e) ? WithFlagNames(e.what()) : e.what();
      spdlog::error("batch {}: failed: {}", progress, message);
      entry.update(nlohmann::json{{"status", "failed"}, {"error", message},
                    {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_item).count()}});
      AppendRecord(record, entry);
      ++failed;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("batch shard {}: {} done, {} skipped (done earlier), {} failed in {:.1f} s; outcomes in {}", shard.Label(), done, skipped,
               failed, seconds, record.string());
  if (Interrupted()) return 130;
  return failed > 0 ? 1 : 0;
}

}  // namespace

Runner AddBatchCommand(CLI::App& parent, const std::vector<std::string>* argv) {
  auto args = std::make_shared<BatchArgs>();
  CLI::App* cmd = parent.add_subcommand("batch", "Reconstruct every input of a manifest headless, the model loaded once");
  cmd->add_option("manifest", args->manifest, "CSV (header row; columns input, name, synthetic, scene, size, every, max_frames, strict, intrinsics) or JSON lines")
      ->required();
  args->run.model.Add(*cmd);
  args->run.cache.Add(*cmd);
  args->run.in.Add(*cmd);  // defaults of every item (--size, --every, --max-frames, --strict, --scene)
  for (const char* per_item : {"--input", "--synthetic"}) cmd->remove_option(cmd->get_option(per_item));  // the manifest's
  cmd->add_option("--out,-o", args->run.out, "Root folder: one folder per item, batch.jsonl with every outcome")->capture_default_str();
  args->run.AddOutputOptions(*cmd);
  cmd->add_option("--shard", args->shard, "I/N: process the items k with k % N == I (default: SLURM_ARRAY_TASK_ID/COUNT, else all)");
  const std::string slurm = "Slurm job array (--sbatch)";
  cmd->add_option("--sbatch", args->slurm.script, "Write a Slurm job-array script for the manifest to this file and exit")->group(slurm);
  cmd->add_option("--array-tasks", args->slurm.tasks, "Array tasks (default: one per item, at most 1000)")->group(slurm);
  cmd->add_option("--gpus-per-task", args->slurm.gpus, "GPUs per task (0: CPU only)")->group(slurm)->capture_default_str();
  cmd->add_option("--cpus-per-task", args->slurm.cpus, "CPU cores per task")->group(slurm)->capture_default_str();
  cmd->add_option("--mem", args->slurm.mem, "Memory per task")->group(slurm)->capture_default_str();
  cmd->add_option("--time-limit", args->slurm.time, "Time limit per task")->group(slurm)->capture_default_str();
  cmd->add_option("--partition", args->slurm.partition, "Slurm partition")->group(slurm);
  return [cmd, args, argv]() { return cmd->parsed() ? RunBatch(*args, *argv) : -1; };
}

}  // namespace streamrecon::app
