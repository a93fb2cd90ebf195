#pragma once

#include "berth/base/json.hpp"
#include "berth/session/runtime.hpp"

#include <memory>
#include <string>

namespace berth::node {

/// Request-reply API on berth.api.v1.<verb>, answered by any node (queue group "berth").
/// Plain and blocking: each request runs on the node's I/O pool. Replies are JSON objects;
/// failures are {"error": {"code": "...", "message": "..."}} with the field named.
class api_service {
 public:
  explicit api_service(std::shared_ptr<session::runtime> rt);
  /// Handle one request; returns the reply body.
  [[nodiscard]] std::string handle(const std::string& verb, const std::string& payload);

 private:
  result<json::value> start(const json::value& req);
  result<json::value> get(const json::value& req);
  result<json::value> list(const json::value& req);
  result<json::value> cancel_or_input(const json::value& req, bool cancel);
  result<json::value> stats(const json::value& req);
  /// Every node's last heartbeat with its state: ready, suspect (three missed), dead (past
  /// cluster.node_ttl).
  result<json::value> nodes(const json::value& req);
  result<json::value> retry(const json::value& req);
  result<json::value> diff(const json::value& req);
  result<json::value> summary_of(const std::string& id);

  std::shared_ptr<session::runtime> rt_;
};

/// The error reply body for an error.
[[nodiscard]] std::string error_reply(const error& e);

}  // namespace berth::node
