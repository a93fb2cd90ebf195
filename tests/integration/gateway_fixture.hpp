#pragma once

// What the gateway tests share: a node with its gateway, tokens from the CLI, and HTTP by
// python3's http.client (a client the gateway did not write).

#include "harness.hpp"
#include "ws_client.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/json.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

namespace berth::test {

struct http_reply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  ///< lower-case names
  [[nodiscard]] std::string header(const std::string& k) const {
    auto it = headers.find(k);
    return it == headers.end() ? std::string() : it->second;
  }
};

http_reply http(const std::string& base, const std::string& method, const std::string& path,
                const std::map<std::string, std::string>& headers = {},
                const std::string& body = {});

/// `n` GET requests of `path` back to back on one connection (one python3 process, so the client
/// is not what limits the rate): each one's status, and the last Retry-After seen.
std::vector<int> http_burst(const std::string& base, const std::string& path,
                            const std::map<std::string, std::string>& headers, int n,
                            std::string* retry_after = nullptr);

/// One SSE event as sse_read.py printed it: id, event ("message", "end", ...), data.
struct sse_event {
  std::string id, event, data;
};
/// Read an SSE stream until `end`, close or `timeout_s` (tests/support/sse_read.py); `auth` is
/// "Bearer <token>" or "Cookie <value>"; `last_event_id` "-" for none. `status` gets the HTTP
/// status.
std::vector<sse_event> sse(const std::string& base, const std::string& path,
                           const std::string& auth, const std::string& last_event_id, int timeout_s,
                           int* status = nullptr);

struct gateway_fixture : ::testing::Test {
  temp_dir dir;
  std::unique_ptr<node_process> node;
  std::string url;
  /// Environment for the node (BERTH_GATEWAY_* settings), set before SetUp runs.
  std::map<std::string, std::string> node_env;

  void SetUp() override;
  std::string token(const std::string& name, const std::string& scope);
  std::map<std::string, std::string> bearer(const std::string& t) {
    return {{"Authorization", "Bearer " + t}};
  }
  /// POST a spec (JSON) with token `t`; returns the new session's id ("" on failure).
  std::string start(const std::string& t, const std::string& spec);
  /// A WebSocket authenticated with token `t` (its auth reply consumed).
  std::unique_ptr<ws_client> ws(const std::string& t, ws_client::options o = {});
};

}  // namespace berth::test
