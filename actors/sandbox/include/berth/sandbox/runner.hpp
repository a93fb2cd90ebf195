#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace berth::sandbox {

/// One command to run for a step.
struct command {
  std::string session;  ///< whose sandbox runs it (sandboxed runners keep one per session)
  std::vector<std::string> argv;
  std::string cwd;                             ///< the session's working directory
  std::map<std::string, std::string> env;      ///< the complete environment of the command
  std::int64_t max_output_bytes = 64LL << 20;  ///< per stream; the rest is dropped and marked
  std::size_t chunk_bytes = std::size_t{16} << 10;
  std::optional<std::string> stdin_data;  ///< nullopt: /dev/null
  bool network = false;  ///< sandboxed runners: the host's network (else loopback only)
};

/// How a command ended.
struct outcome {
  int exit_code = -1;
  int signal = 0;
  std::int64_t duration_ms = 0;
  std::int64_t duration_us = 0;  ///< the same, in microseconds (fast commands)
  std::uint64_t stdout_bytes = 0;
  std::uint64_t stderr_bytes = 0;
  bool truncated = false;
  bool oom_killed = false;             ///< the memory limit's OOM killer ended it
  std::int64_t peak_memory_bytes = 0;  ///< largest resident set of the command (0: unknown)
};

/// Receives output as it is produced, on the thread that runs `wait()`. stream: 1 stdout,
/// 2 stderr. `truncated` is set once per stream, on the marker call past the output cap.
using output_fn = std::function<void(int stream, std::string_view chunk, bool truncated)>;

/// A started command.
class running_command {
 public:
  virtual ~running_command() = default;
  /// The command's process id on this host, to find it again after a crash; -1 when the
  /// runner has none (a sandboxed command lives in the sandbox's own PID namespace).
  [[nodiscard]] virtual pid_t pid() const = 0;
  /// Blocks until the command and everything it started are gone, delivering output. Call
  /// once, from a thread that may block (never an actor's scheduler thread).
  [[nodiscard]] virtual outcome wait() = 0;
  /// Stop the whole process tree: SIGTERM now, SIGKILL after `grace`. Thread-safe and
  /// idempotent; returns at once.
  virtual void stop(millis grace) = 0;
};

/// Where a session's commands find their directories, as the commands see them: paths inside
/// the sandbox for the bubblewrap runner, host paths for plain processes. Everything the node
/// puts into a command's environment or working directory is built from these.
struct layout {
  std::string work;  ///< the workspace (bwrap: /work)
  std::string home;  ///< $HOME, outside the workspace: tool state never reaches a commit
  std::string tmp;   ///< $TMPDIR (bwrap: the sandbox's private tmpfs)
  std::string path;  ///< $PATH: directories that exist where the command runs
};

/// The sandbox's own paths (bubblewrap runner).
inline constexpr const char* sandbox_work = "/work";
inline constexpr const char* sandbox_home = "/home/berth";
inline constexpr const char* sandbox_path = "/usr/local/bin:/usr/bin:/bin";

/// Starts step commands: plain processes, or commands in the session's bubblewrap sandbox.
class step_runner {
 public:
  virtual ~step_runner() = default;
  /// Session `session`'s directories as its commands see them.
  [[nodiscard]] virtual layout layout_of(const std::string& session) const = 0;
  /// Start `cmd`. A missing program is errc::not_found naming it.
  [[nodiscard]] virtual result<std::unique_ptr<running_command>> start(const command& cmd,
                                                                       output_fn on_output) = 0;
  /// A short name for logs and stats ("process", "bwrap").
  [[nodiscard]] virtual std::string name() const = 0;
  /// A file tool (`read_file`, `write_file`, `edit`, `list_dir`, `search`) on the session's
  /// workspace. The plain-process runner has none: tools need the sandbox to keep paths inside.
  [[nodiscard]] virtual result<json::value> file_tool(const std::string& session,
                                                      const std::string& tool,
                                                      const json::value& args) {
    (void)session;
    (void)args;
    return error{errc::unsupported, "tool " + tool +
                                        ": file tools run only in the sandbox "
                                        "(sandbox.mode = \"bwrap\")"};
  }
  /// A session starts: build what its commands will need (its warm sandbox) ahead of the first
  /// one. Blocking; errors surface again on the first command.
  virtual void prepare(const std::string& session, bool network) {
    (void)session;
    (void)network;
  }
  /// The session has ended: tear down what the runner keeps for it. Idempotent.
  virtual void release(const std::string& session) { (void)session; }
};

/// Plain child processes: posix_spawn (never fork), each command leading its own process
/// group in the session's working directory, stopped as a group. No isolation. Sessions'
/// workspaces are `<work_root>/<session>` and homes `<home_root>/<session>` on the host (empty
/// roots: the current directory and $TMPDIR, for tests that only run commands).
[[nodiscard]] std::unique_ptr<step_runner> make_process_runner(std::string work_root = {},
                                                               std::string home_root = {});

/// Options of the bubblewrap runner: one warm sandbox per session (and network mode).
struct bwrap_runner_options {
  std::string group;      ///< the node's id: its sandboxes' cgroup group
  std::string run;        ///< this run of the node (e.g. its start time): part of cgroup names
  std::string work_root;  ///< host directory holding one workspace per session
  std::string home_root;  ///< host directory holding one home per session (bound at /home/berth)
  std::string bwrap = "bwrap";
  std::string helper;
  std::int64_t uid = -1;  ///< drop to this uid/gid when root (-1: keep)
  std::int64_t gid = -1;
  std::int64_t memory_bytes = 0, pids = 0, cpu_percent = 0, tmp_bytes = 0, nofile = 0,
               fsize_bytes = 0;
};

/// Every command in its session's bubblewrap sandbox (sandbox.hpp). Commands see their
/// session's workspace at /work and its home at /home/berth; `cmd.cwd` may also be the host
/// path of the workspace (mapped).
[[nodiscard]] std::unique_ptr<step_runner> make_bwrap_runner(bwrap_runner_options opts);

/// Kill a process group left over by a crashed node, if `pid` still runs and its start time
/// matches `start_time` (so a reused pid is never hit). Returns true if something was killed.
bool kill_leftover(pid_t pid, unsigned long long start_time);

}  // namespace berth::sandbox
