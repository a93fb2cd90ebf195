#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/sandbox/runner.hpp"

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace berth::sandbox {

/// Resource limits of one sandbox (0: no limit). Memory, pids and CPU go through cgroups;
/// descriptors and file size are rlimits every command inherits; /tmp is a tmpfs of this size.
struct limits {
  std::int64_t memory_bytes = 0;
  std::int64_t pids = 0;
  std::int64_t cpu_percent = 0;  ///< of one CPU: 100 = one full core
  std::int64_t tmp_bytes = 0;
  std::int64_t nofile = 0;
  std::int64_t fsize_bytes = 0;
};

/// How to build a sandbox.
struct sandbox_options {
  std::string name;       ///< unique per node (the session id); names its cgroup
  std::string group;      ///< the node's cgroup group (node id): swept at the node's start
  std::string workspace;  ///< host directory, bound read-write at /work
  std::string home;       ///< host directory, bound read-write at /home/berth (empty: none)
  bool network = false;   ///< true: the host's network; false: a private loopback only
  limits lim;
  std::string bwrap = "bwrap";
  std::string helper;        ///< path of the berth-sandbox helper
  std::optional<uid_t> uid;  ///< drop to this user (when the node runs as root)
  std::optional<gid_t> gid;
};

/// Counters read from the sandbox's cgroups.
struct usage {
  std::int64_t oom_kills = 0;        ///< processes the OOM killer took (memory limit)
  std::int64_t pids_limit_hits = 0;  ///< forks refused by the pids limit
  std::int64_t cpu_throttled = 0;    ///< CFS periods in which the CPU quota held it back
  std::int64_t memory_peak_bytes = 0;
};

/// One warm sandbox: bubblewrap around the `berth-sandbox` helper, which runs every command
/// and file tool of its session inside. A command costs a message and a posix_spawn inside, not
/// a new bwrap. Thread-safe. The sandbox dies with the node (--die-with-parent); stop() ends it
/// earlier and removes its cgroups. Start sandboxes from a long-lived thread: the kernel's
/// parent-death signal follows the thread that started them.
class sandbox {
 public:
  virtual ~sandbox() = default;
  [[nodiscard]] static result<std::shared_ptr<sandbox>> start(const sandbox_options& opts);

  /// Run a command inside. `cmd.cwd` is a path inside the sandbox (default /work).
  [[nodiscard]] virtual result<std::unique_ptr<running_command>> exec(const command& cmd,
                                                                      output_fn on_output) = 0;
  /// File tools; paths are relative to /work (or absolute under /work) and never leave it.
  [[nodiscard]] virtual result<std::string> read_file(const std::string& path,
                                                      std::int64_t max_bytes = 8 << 20) = 0;
  [[nodiscard]] virtual status write_file(const std::string& path, std::string_view content,
                                          int mode = 0644) = 0;
  [[nodiscard]] virtual status edit(const std::string& path, const std::string& search,
                                    const std::string& replace) = 0;
  /// {"entries": [{"name", "type", "size"}], "truncated"}
  [[nodiscard]] virtual result<json::value> list_dir(const std::string& path) = 0;
  /// {"matches": [{"path", "line", "text"}], "truncated"}; `pattern` is an ECMAScript regex.
  [[nodiscard]] virtual result<json::value> search(const std::string& pattern,
                                                   const std::string& path = ".",
                                                   std::int64_t max_results = 200,
                                                   bool literal = false) = 0;
  [[nodiscard]] virtual usage read_usage() const = 0;
  /// Kill everything inside, wait for the helper, remove the cgroups. Idempotent.
  virtual void stop() = 0;
  [[nodiscard]] virtual pid_t pid() const = 0;  ///< bwrap's pid on the host
};

/// The seccomp BPF program every sandbox loads (Flatpak's deny list), built once.
[[nodiscard]] result<std::string> seccomp_program();

/// Kill and remove what a crashed node left in its cgroup group. Returns how many sandboxes.
std::size_t sweep_leftovers(const std::string& group);

/// Whether this host can run sandboxes (bwrap present, user namespaces, cgroup controllers);
/// the error names what is missing.
[[nodiscard]] status check_host(const std::string& bwrap, const std::string& helper);

/// Copy the helper binary into `dir` (mode 0755) when it differs, so that the sandbox user can
/// reach it wherever the node binary lives. Returns the installed path.
[[nodiscard]] result<std::string> install_helper(const std::string& from, const std::string& dir);

/// The helper next to a binary (`berth-sandbox` in the same directory as `/proc/self/exe`).
[[nodiscard]] std::string helper_next_to_self();

/// The sandbox user (uid, gid) can walk down to `path` (execute permission on every ancestor);
/// otherwise an error naming the first directory that stops it.
[[nodiscard]] status check_reachable(const std::string& path, uid_t uid, gid_t gid);

/// A runner for when the sandbox cannot work: every command fails with `why`. Sessions fail
/// clearly instead of running unsandboxed.
[[nodiscard]] std::unique_ptr<step_runner> make_failing_runner(error why);

}  // namespace berth::sandbox
