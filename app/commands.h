// Subcommands of the `streamrecon` executable: each registers its options on a CLI11 app and
// returns a runner that does the work and yields the process exit code.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace streamrecon::app {

using Runner = std::function<int()>;

Runner AddVerifyCommand(CLI::App& parent);
Runner AddRunCommand(CLI::App& parent);
Runner AddViewCommand(CLI::App& parent);
Runner AddBenchCommand(CLI::App& parent);
Runner AddAnalyzeCommand(CLI::App& parent);
Runner AddEvalCommand(CLI::App& parent);
Runner AddSynthCommand(CLI::App& parent);
Runner AddTrainCommand(CLI::App& parent);
// argv: the process's arguments as given (the --sbatch script repeats them).
Runner AddBatchCommand(CLI::App& parent, const std::vector<std::string>* argv);

}  // namespace streamrecon::app
