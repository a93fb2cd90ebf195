#pragma once

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace berth::sandbox {

/// One command to run for a step.
struct command {
  std::vector<std::string> argv;
  std::string cwd;                             ///< the session's working directory
  std::map<std::string, std::string> env;      ///< the complete environment of the command
  std::int64_t max_output_bytes = 64LL << 20;  ///< per stream; the rest is dropped and marked
  std::size_t chunk_bytes = 16 * 1024;
};

/// How a command ended.
struct outcome {
  int exit_code = -1;
  int signal = 0;
  std::int64_t duration_ms = 0;
  std::uint64_t stdout_bytes = 0;
  std::uint64_t stderr_bytes = 0;
  bool truncated = false;
};

/// Receives output as it is produced, on the thread that runs `wait()`. stream: 1 stdout,
/// 2 stderr. `truncated` is set once per stream, on the marker call past the output cap.
using output_fn = std::function<void(int stream, std::string_view chunk, bool truncated)>;

/// A started command.
class running_command {
 public:
  virtual ~running_command() = default;
  [[nodiscard]] virtual pid_t pid() const = 0;
  /// Blocks until the command and everything it started are gone, delivering output. Call
  /// once, from a thread that may block (never an actor's scheduler thread).
  [[nodiscard]] virtual outcome wait() = 0;
  /// Stop the whole process tree: SIGTERM now, SIGKILL after `grace`. Thread-safe and
  /// idempotent; returns at once.
  virtual void stop(millis grace) = 0;
};

/// Starts step commands. The plain-process runner implements it now; the bubblewrap sandbox
/// implements the same interface.
class step_runner {
 public:
  virtual ~step_runner() = default;
  /// Start `cmd`. A missing program is errc::not_found naming it.
  [[nodiscard]] virtual result<std::unique_ptr<running_command>> start(const command& cmd,
                                                                       output_fn on_output) = 0;
  /// A short name for logs and stats ("process", "bwrap").
  [[nodiscard]] virtual std::string name() const = 0;
};

/// Plain child processes: posix_spawn (never fork), each command leading its own process
/// group in the session's working directory, stopped as a group. No isolation.
[[nodiscard]] std::unique_ptr<step_runner> make_process_runner();

/// Kill a process group left over by a crashed node, if `pid` still runs and its start time
/// matches `start_time` (so a reused pid is never hit). Returns true if something was killed.
bool kill_leftover(pid_t pid, unsigned long long start_time);

}  // namespace berth::sandbox
