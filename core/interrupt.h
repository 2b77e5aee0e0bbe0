// Ctrl-C and SIGTERM for long commands: the first signal asks the command to stop reading input
// and finish what it has (Interrupted() turns true); a second one ends the process at once with
// exit code 130, after removing the temporary files of atomic writes in progress.
#pragma once

#include <filesystem>

namespace streamrecon {

// Installs the SIGINT/SIGTERM handler (idempotent).
void InstallInterruptHandler();

// True once the first SIGINT/SIGTERM arrived (or RequestInterrupt was called).
bool Interrupted();

// Sets the flag as a signal would (tests, and stopping from other code paths).
void RequestInterrupt();

// Temporary files that a second signal removes before the process ends (WriteFileAtomically
// registers each while it is written). At most 16 at a time; more are not tracked.
void RegisterTemporaryFile(const std::filesystem::path& path);
void UnregisterTemporaryFile(const std::filesystem::path& path);

}  // namespace streamrecon
