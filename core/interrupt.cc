#include "core/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace streamrecon {
namespace {

std::atomic<int> g_signals{0};
std::atomic<bool> g_installed{false};

// Fixed slots so that the handler can read them without locks or allocation.
constexpr int kSlots = 16;
constexpr size_t kPathMax = 1024;
char g_paths[kSlots][kPathMax];
std::atomic<int> g_slot_state[kSlots];  // 0 free, 1 being written, 2 registered

void OnSignal(int) {
  if (g_signals.fetch_add(1) == 0) {
    static const char note[] = "\ninterrupted: finishing the frames already read and writing their outputs (again to abort)\n";
    (void)!::write(STDERR_FILENO, note, sizeof(note) - 1);
    return;
  }
  for (int i = 0; i < kSlots; ++i)
    if (g_slot_state[i].load() == 2) ::unlink(g_paths[i]);
  static const char note[] = "\naborted\n";
  (void)!::write(STDERR_FILENO, note, sizeof(note) - 1);
  ::_exit(130);
}

}  // namespace

void InstallInterruptHandler() {
  if (g_installed.exchange(true)) return;
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool Interrupted() { return g_signals.load() > 0; }

void RequestInterrupt() { g_signals.fetch_add(1); }

void RegisterTemporaryFile(const std::filesystem::path& path) {
  const std::string s = path.string();
  if (s.size() + 1 > kPathMax) return;
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (g_slot_state[i].compare_exchange_strong(expected, 1)) {
      std::memcpy(g_paths[i], s.c_str(), s.size() + 1);
      g_slot_state[i].store(2);
      return;
    }
  }
}

void UnregisterTemporaryFile(const std::filesystem::path& path) {
  const std::string s = path.string();
  for (int i = 0; i < kSlots; ++i) {
    if (g_slot_state[i].load() == 2 && std::strcmp(g_paths[i], s.c_str()) == 0) {
      g_slot_state[i].store(0);
      return;
    }
  }
}

}  // namespace streamrecon
