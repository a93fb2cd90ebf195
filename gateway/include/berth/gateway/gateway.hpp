#pragma once

// The gateway: one HTTP port for browsers and REST clients in front of the public API subjects
// and streams (never a node's memory), so any gateway serves every session of the cluster.
// Runs inside `berth node` (started once the node is ready) or alone (`berth gateway`).
// Boost.Beast stays inside gateway/src; this header is plain.

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"
#include "berth/bus/client.hpp"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace berth::gateway {

struct options {
  std::string listen = "127.0.0.1:0";        ///< host:port; port 0 picks a free one
  std::string tokens_file;                   ///< the token_store's file (required)
  std::vector<std::string> allowed_origins;  ///< empty: the gateway's own origin
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_header_bytes = 16 << 10;
  millis header_timeout{10'000};  ///< to send a request's headers (slowloris)
  millis idle_timeout{60'000};    ///< between requests on a kept-alive connection
  std::size_t max_connections = 10'000;
  std::size_t max_frame_bytes = 1 << 20;      ///< a WebSocket message; larger: close 1009
  std::size_t max_buffered_bytes = 1 << 20;   ///< unsent items per stream before gaps
  std::size_t max_subscriptions = 16;         ///< topics per WebSocket
  std::size_t max_streams_per_token = 100;    ///< WebSockets + SSE streams per token name
  double rate_per_second = 50;                ///< requests and calls per token name...
  double rate_burst = 100;                    ///< ...in bursts of this many
  millis auth_timeout{5'000};                 ///< a WebSocket's auth frame, without a cookie
  millis stall_timeout{30'000};               ///< a write the client does not read: closed
  millis cookie_ttl{std::chrono::hours(12)};  ///< a console login lasts this long
  std::string console_dir;                    ///< serve the console from here; empty: built in
  std::string prefix = "berth";               ///< the cluster's subject prefix
  millis api_timeout{30'000};                 ///< one API request through NATS
  int io_threads = 2;
  int api_threads = 4;  ///< blocking API requests run here, never on I/O threads
};

/// A running gateway. Thread-safe; stop() (or the destructor) closes every connection.
class server {
 public:
  /// Listen and serve. `bus` is a connection to the cluster's NATS (the node's own, or one the
  /// standalone gateway made). Errors name the listen address.
  [[nodiscard]] static result<std::unique_ptr<server>> start(options o,
                                                             std::shared_ptr<bus::client> bus);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// "http://host:port" as bound (the port chosen when 0 was asked for).
  [[nodiscard]] std::string url() const;
  void stop();

  struct impl;  ///< gateway/src only

 private:
  explicit server(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

}  // namespace berth::gateway
