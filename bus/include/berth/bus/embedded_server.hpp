#pragma once

#include "berth/base/error.hpp"

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace berth::bus {

/// The nats-server -js a node runs for itself when no external NATS is configured: loopback
/// only, a random port chosen at first start and kept across restarts, its store under the
/// node's data dir.
///
/// Clients must present a random token, generated on first start and kept in `<dir>/token`
/// (mode 0600): on a shared machine, other local users cannot reach the node's API.
///
/// A watchdog thread restarts it on the same port if it dies. It is deliberately not tied to
/// the node's lifetime: after `kill -9` of the node it keeps running with its data, and the
/// restarted node adopts it (found through its pid file). `stop()` (graceful node stop) ends it.
class embedded_server {
 public:
  struct options {
    std::string binary = "nats-server";
    std::string dir;          ///< <data-dir>/nats: config, store, pid and ports files, log
    std::string server_name;  ///< unique per node
    std::string cluster_name;
    std::vector<std::string>
        routes;                  ///< peers' cluster addresses, host:port (nodes joined by config)
    std::string cluster_listen;  ///< host:port this server takes routes on (with routes)
  };

  /// The client URL with the access token, e.g. nats://<token>@127.0.0.1:<port>. Secret: only
  /// for files of mode 0600.
  [[nodiscard]] std::string url_with_token() const;

  /// Adopt a live server of this dir or start one; returns once it accepts clients.
  [[nodiscard]] static result<std::unique_ptr<embedded_server>> start(options opts);
  ~embedded_server();
  embedded_server(const embedded_server&) = delete;
  embedded_server& operator=(const embedded_server&) = delete;

  /// nats://127.0.0.1:<port>
  [[nodiscard]] std::string url() const;
  [[nodiscard]] pid_t pid() const;
  /// Stop the watchdog and the server (SIGTERM, then SIGKILL after 10 s).
  void stop();

  struct impl;

 private:
  explicit embedded_server(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

}  // namespace berth::bus
