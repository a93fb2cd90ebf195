#pragma once

#include "berth/base/error.hpp"
#include "berth/sandbox/sandbox.hpp"

#include <string>
#include <vector>

namespace berth::sandbox {

/// One sandbox's cgroups. cgroup v2 when the unified hierarchy offers the memory, pids and cpu
/// controllers; otherwise the v1 hierarchies of those three (each must be mounted and
/// writable). Layout: <hierarchy>/berth/<group>/<name>.
class cgroup {
 public:
  static result<cgroup> create(const std::string& group, const std::string& name,
                               const limits& lim);
  /// cgroup.procs files a process writes its pid to, to join.
  [[nodiscard]] const std::vector<std::string>& procs_files() const { return procs_; }
  [[nodiscard]] usage read_usage() const;
  /// SIGKILL every process inside (cgroup.kill on v2), until empty or `tries` rounds pass.
  void kill_all(int tries = 50) const;
  /// kill_all, then remove the directories.
  void remove() const;
  [[nodiscard]] bool v2() const { return v2_; }

  /// The groups of `group` left by an earlier run: killed and removed. Returns how many.
  static std::size_t sweep(const std::string& group);
  /// Which hierarchy would be used, or an error naming what is missing.
  static result<std::string> describe();

 private:
  bool v2_ = false;
  std::vector<std::string> dirs_;  // one (v2) or three (v1: memory, pids, cpu)
  std::vector<std::string> procs_;
};

}  // namespace berth::sandbox
