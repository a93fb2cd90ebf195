#pragma once

#include "berth/base/error.hpp"

#include <sys/types.h>

#include <map>
#include <string>

namespace berth::cli {

/// A `berth node` child process with its own data dir (used by `demo` and `bench`).
class local_node {
 public:
  explicit local_node(std::string data_dir, std::map<std::string, std::string> env = {});
  ~local_node();  ///< stops the node (SIGTERM) if it still runs
  /// Start and wait until it writes node.json. The log goes to <data_dir>.log.
  [[nodiscard]] status start();
  /// SIGTERM and wait (graceful stop).
  void stop();
  /// SIGKILL and reap (a crash); the embedded nats-server stays up, as after a real crash.
  void kill9();
  /// Leave the node running past this object (`berth demo --keep`).
  void release() { pid_ = -1; }
  /// Kill the embedded nats-server left behind.
  void kill_embedded_server();
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& data_dir() const { return data_dir_; }
  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] std::string log_path() const { return data_dir_ + ".log"; }

 private:
  std::string data_dir_;
  std::map<std::string, std::string> env_;
  pid_t pid_ = -1;
  std::string url_;
};

}  // namespace berth::cli
