#pragma once

#include "berth/base/error.hpp"

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace berth::process {

/// How to start a child. The runtime never calls fork(): posix_spawn only, so the cost does not
/// grow with the parent's memory.
struct spawn_options {
  std::string cwd;                                        ///< empty: inherit
  std::optional<std::map<std::string, std::string>> env;  ///< nullopt: inherit the environment
  int stdin_fd = -1;                                      ///< -1: /dev/null
  int stdout_fd = -1;                                     ///< -1: /dev/null
  int stderr_fd = -1;                                     ///< -1: /dev/null
  bool new_process_group = true;  ///< the child leads its own group (killed as a group)
  bool search_path = true;        ///< look argv[0] up in PATH
  /// Descriptors the child gets as 3, 4, ... in this order (everything else above 2 is closed).
  std::vector<int> extra_fds;
};

/// Start argv[0] with posix_spawn. The child gets only descriptors 0, 1 and 2. Errors name the
/// program; a missing binary is
/// errc::not_found ("no such file: <argv0>").
[[nodiscard]] result<pid_t> spawn(const std::vector<std::string>& argv, const spawn_options& opts);

/// Whether `pid` exists (and is not a zombie we have reaped).
[[nodiscard]] bool alive(pid_t pid);

/// Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), to tell a
/// process from a later one that reused its pid. nullopt: no such process.
[[nodiscard]] std::optional<unsigned long long> start_time(pid_t pid);

/// Send `sig` to the process group `pgid` (ignores ESRCH).
void kill_group(pid_t pgid, int sig);

/// This process's environment as a map (e.g. to extend it for a child).
[[nodiscard]] std::map<std::string, std::string> current_env();

/// Look up an executable in PATH; nullopt when absent.
[[nodiscard]] std::optional<std::string> find_executable(const std::string& name);

/// Raise this process's open-files soft limit to its hard limit (servers and load generators
/// holding thousands of sockets; the usual soft limit is 1,024). Idempotent.
void raise_open_files_limit();

/// What `run_capture` saw.
struct captured {
  int exit_code = -1;
  int signal = 0;
  bool timed_out = false;
  bool truncated = false;  ///< stdout or stderr went past `max_bytes`; the rest was dropped
  std::string out;
  std::string err;
};

/// Run argv to completion (posix_spawn, no shell), feeding `stdin_data` and capturing stdout and
/// stderr up to `max_bytes` each. Past `timeout` the process group is killed (timed_out).
[[nodiscard]] result<captured> run_capture(const std::vector<std::string>& argv,
                                           const std::string& stdin_data,
                                           std::chrono::milliseconds timeout,
                                           std::size_t max_bytes = 1 << 20,
                                           const spawn_options& base = {});

}  // namespace berth::process
