// `streamrecon`: streaming 3D reconstruction from video. One binary, one subcommand per job.
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <iostream>

#include <c10/util/Exception.h>

#include "app/commands.h"
#include "app/common_options.h"
#include "core/errors.h"
#include "datasets/frame_source.h"

int main(int argc, char** argv) {
  CLI::App app{"StreamRecon: streaming 3D reconstruction from video with a bounded KV cache"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "streamrecon 0.1.0");
  bool verbose = false;
  app.add_flag("--verbose", verbose, "Let the decoders (OpenCV, FFmpeg, GStreamer) print their own log lines too");
  app.fallthrough();  // --verbose may follow the subcommand
  const std::vector<std::string> arguments(argv, argv + argc);
  std::vector<streamrecon::app::Runner> runners = {
      streamrecon::app::AddRunCommand(app),
      streamrecon::app::AddBatchCommand(app, &arguments),
      streamrecon::app::AddViewCommand(app),
      streamrecon::app::AddVerifyCommand(app),
      streamrecon::app::AddBenchCommand(app),
      streamrecon::app::AddAnalyzeCommand(app),
      streamrecon::app::AddEvalCommand(app),
      streamrecon::app::AddSynthCommand(app),
      streamrecon::app::AddTrainCommand(app),
  };
  spdlog::set_pattern("[%H:%M:%S] %v");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors exit 2 like every other input error (not CLI11's own codes), in one line.
    std::string what = e.what();
    if (const size_t nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    std::string command;
    for (const CLI::App* sub : app.get_subcommands()) command = sub->get_name();
    std::cerr << "error: " << what << "\n(see 'streamrecon " << (command.empty() ? "" : command + " ") << "--help')\n";
    return 2;
  }
  streamrecon::datasets::QuietDecoderLogs(verbose);
  try {
    for (auto& run : runners) {  // each returns -1 unless its subcommand was chosen
      const int rc = run();
      if (rc >= 0) return rc;
    }
    return 0;
  } catch (const streamrecon::OptionError& e) {
    std::cerr << "error: " << streamrecon::app::WithFlagNames(e.what()) << "\n";
    return 2;
  } catch (const streamrecon::BudgetError& e) {
    std::cerr << "error: " << streamrecon::app::WithFlagNames(e.what()) << "\n";
    return 2;
  } catch (const streamrecon::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    // LibTorch's C++ backtrace on request (its own switch), for errors raised deep inside it.
    const char* show = std::getenv("TORCH_SHOW_CPP_STACKTRACES");
    std::cerr << "error (LibTorch): " << (show && std::string(show) == "1" ? e.what() : e.what_without_backtrace()) << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  }
}
